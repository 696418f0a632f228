"""How many sequences to decode at once: as many as ``evaluate.batch_size`` asks, fewer where the
device's free memory would not hold them, and with ``evaluate.batch_size: auto`` as many as it holds.

A batch's memory is what its sequences add to the loaded model: the KV cache of each (prompt and
completion, every layer) and the largest activations of the prompt's forward pass (one layer's
MLP and attention scores at a time, and the last position's logits). :func:`sequence_bytes`
estimates that from the model's config; :func:`plan_batches` packs the length-sorted prompts so
that each batch's sequences, all as long as its longest, fit the budget: a fraction
(``evaluate.memory_fraction``) of the memory free on the device when decoding starts (CUDA's free
memory and its allocator's reusable cache; the RAM the system reports available on CPU).

With memory to spare the plan is fixed-size chunks of ``evaluate.batch_size``, as before, so a
run's predictions do not depend on the machine's memory unless the machine is short of it (then
the stages log that batches were made smaller: greedy predictions can differ in the last bits of
a float from a run with larger batches).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import psutil

AUTO = "auto"
DEFAULT_MEMORY_FRACTION = 0.5  # evaluate.memory_fraction's default (tests/test_batch_memory.py holds them equal)
FLOAT_BYTES = 4  # activations and the cache are counted as float32: an upper bound under bf16


@dataclass(frozen=True)
class Batching:
    """``size``: the most sequences per batch (``"auto"``: no limit but memory); ``memory_fraction``:
    the share of the device's free memory that the batches may take."""

    size: int | Literal["auto"] = 64
    memory_fraction: float = DEFAULT_MEMORY_FRACTION

    def __post_init__(self) -> None:
        if self.size != AUTO and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"batch size must be a positive integer or 'auto', got {self.size!r}")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction!r}")


def as_batching(batching: Batching | int | str) -> Batching:
    return batching if isinstance(batching, Batching) else Batching(size=batching)


def _config_value(config, names: Sequence[str], default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


@dataclass(frozen=True)
class ModelShape:
    """What of a model's config sets its memory per token."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, config) -> ModelShape:
        hidden = _config_value(config, ("hidden_size", "d_model", "n_embd"))
        heads = _config_value(config, ("num_attention_heads", "num_heads", "n_head"))
        layers = _config_value(config, ("num_hidden_layers", "num_layers", "n_layer"))
        if hidden is None or heads is None or layers is None:
            raise ValueError(f"cannot tell the size of a {type(config).__name__}: no hidden size, heads or layers")
        decoder_layers = _config_value(config, ("num_decoder_layers",), layers)
        return cls(
            layers=max(layers, decoder_layers),
            hidden=hidden,
            intermediate=_config_value(config, ("intermediate_size", "d_ff", "n_inner"), 4 * hidden),
            heads=heads,
            kv_heads=_config_value(config, ("num_key_value_heads",), heads),
            head_dim=_config_value(config, ("head_dim", "d_kv"), hidden // heads),
            vocab=config.vocab_size,
        )


def sequence_bytes(shape: ModelShape, prompt_tokens: int, new_tokens: int, all_logits: bool = False) -> int:
    """Bytes one sequence adds to a batch: its KV cache at full length, plus the peak of its
    prompt's forward pass (one layer's MLP and attention scores, the logits: of the last position,
    or of every position where the model cannot keep only the last)."""
    activations = prompt_tokens * (4 * shape.hidden + 3 * shape.intermediate)
    scores = shape.heads * prompt_tokens * prompt_tokens
    logits = shape.vocab * (prompt_tokens if all_logits else 1)
    return kv_cache_bytes(shape, prompt_tokens + new_tokens) + FLOAT_BYTES * (activations + scores + logits)


def kv_cache_bytes(shape: ModelShape, tokens: int, element_bytes: int = FLOAT_BYTES) -> int:
    """Keys and values of ``tokens`` positions in every layer. A decoder caches prompt and
    completion; an encoder-decoder caches its completion, and for cross-attention the prompt (the
    encoder's output projected in each decoder layer): the same count."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * tokens * element_bytes


def free_memory(device) -> int:
    """Bytes free for new tensors on ``device`` (a torch.device or its name): CUDA's free memory
    plus what its caching allocator holds but does not use; on CPU, the RAM the system reports
    available."""
    import torch  # here, not above: the params (ftcot.config) read Batching without torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return psutil.virtual_memory().available


def plan_batches(lengths: Sequence[int], limit: int | None, budget: int, cost: Callable[[int], int]) -> list[range]:
    """Consecutive batches over ``lengths`` (prompt lengths, sorted ascending): each as long as
    possible up to ``limit`` sequences (None: no limit) while ``len(batch) * cost(longest)`` stays
    within ``budget`` bytes. A prompt too large for the budget alone gets a batch of its own."""
    if any(a > b for a, b in itertools.pairwise(lengths)):
        raise ValueError("plan_batches needs the lengths sorted ascending")
    batches, start = [], 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and (limit is None or end - start < limit):
            if (end + 1 - start) * cost(lengths[end]) > budget:
                break
            end += 1
        batches.append(range(start, end))
        start = end
    return batches


def batches_for(
    model, lengths: Sequence[int], batching: Batching, new_tokens: int, sequences_per_prompt: int = 1
) -> list[range]:
    """:func:`plan_batches` for ``model`` on its device; ``lengths`` sorted ascending, a prompt
    counting ``sequences_per_prompt`` sequences (sampled completions of one prompt)."""
    shape = ModelShape.of(model.config)
    device = next(model.parameters()).device
    budget = int(free_memory(device) * batching.memory_fraction)
    all_logits = not keeps_last_logits(model)
    limit = None if batching.size == AUTO else max(1, batching.size // sequences_per_prompt)

    def cost(length: int) -> int:
        return sequences_per_prompt * sequence_bytes(shape, length, new_tokens, all_logits)

    return plan_batches(lengths, limit, budget, cost)


def keeps_last_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (compute the last position's logits
    only): Hugging Face's current causal LMs do; a prompt's logits are then one row, not one per
    token (for SmolLM2, 49,152 floats a token)."""
    forward = getattr(model, "forward", None)
    try:
        return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
