"""Batched decoding (greedy, or sampled for self-consistency) of decoder and encoder-decoder students."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ftcot.errors import FtcotError
from ftcot.evaluation.memory import AUTO, Batching, as_batching, batches_for, keeps_last_logits
from ftcot.student.models import inference_dtype, is_encoder_decoder, load_pretrained

log = logging.getLogger("ftcot")


class GenerationError(FtcotError, ValueError):
    """The prompts do not fit the model's context with the asked generation length."""


@torch.inference_mode()
def generate_greedy(
    model,
    tokenizer,
    prompts: Sequence[str],
    batching: Batching | int | str,
    max_new_tokens: int,
    desc: str = "generate",
    stop: Sequence[str] = (),
    ends: Callable[[str], int | None] | None = None,
) -> list[dict]:
    """Greedy completions of ``prompts``, in their order.

    Prompts are sorted by length so each batch pads little, left-padded (a decoder continues from
    the last position; an encoder-decoder ignores padding through its mask), decoded with the KV
    cache and stopped at EOS. Returns, per prompt, the
    completion ``text`` (special tokens removed), its token count and whether it hit
    ``max_new_tokens`` (or the end of the model's context) without EOS (``truncated``).
    ``batching``: sequences per batch (an int, ``"auto"`` or a :class:`Batching`), made smaller
    where the device's free memory would not hold them (:mod:`ftcot.evaluation.memory`).
    A completion also ends at the first of the ``stop`` strings (cut off, not included): a
    few-shot prompt's next "Q:"; and where ``ends(text)`` gives the length of a complete answer
    (e.g. a student's answer line: :func:`ftcot.student.formats.answer_end`), cut there.

    A decoder's batch shrinks as its sequences end (:func:`decode_greedy`): the cost of a batch is
    the sum of its completions' lengths, not its longest times its size.
    """
    if not is_encoder_decoder(model):
        return decode_greedy(model, tokenizer, prompts, batching, max_new_tokens, desc, stop, ends)
    groups = _generate_padded_left(model, tokenizer, prompts, batching, max_new_tokens, desc, stop=stop)
    return [_ended(group[0], ends, tokenizer) for group in groups]


def _ended(result: dict, ends: Callable[[str], int | None] | None, tokenizer) -> dict:
    """``result`` cut where ``ends`` says its answer is complete (an encoder-decoder's completion,
    which generate() decoded to the end)."""
    cut = ends(result["text"]) if ends is not None else None
    if cut is None:
        return result
    text = result["text"][:cut]
    return {
        "text": text,
        "generated_tokens": len(tokenizer(text, add_special_tokens=False)["input_ids"]),
        "truncated": False,
    }


def stop_at(text: str, stop: Sequence[str], ends: Callable[[str], int | None] | None) -> int | None:
    """Where a completion's text ends early: before the first stop string, or where ``ends`` says."""
    cuts = [text.index(s) for s in stop if s in text]
    if ends is not None and (end := ends(text)) is not None:
        cuts.append(end)
    return min(cuts, default=None)


@torch.inference_mode()
def decode_greedy(
    model,
    tokenizer,
    prompts: Sequence[str],
    batching: Batching | int | str,
    max_new_tokens: int,
    desc: str = "generate",
    stop: Sequence[str] = (),
    ends: Callable[[str], int | None] | None = None,
) -> list[dict]:
    """Greedy decoding of a causal LM with the KV cache, where each sequence leaves the batch (and
    its rows leave the cache) as soon as it ends: at EOS, at a stop string, or where ``ends`` says
    its answer is complete. ``generate()`` instead carries every finished sequence to the end of
    the batch's longest. Same prompts order, padding (left) and positions as ``generate()``, so the
    completions are the same up to the floating-point effect of a smaller batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    results: list[dict | None] = [None] * len(prompts)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    context = getattr(model.config, "max_position_embeddings", None)
    check_text = bool(stop) or ends is not None
    # The prompt's pass computes the last position's logits only, where the model can: the others
    # would be a row of the vocabulary per prompt token, the largest tensor of the pass.
    last_logits = {"logits_to_keep": 1} if keeps_last_logits(model) else {}
    plan = _plan(model, [len(encoded[i]) for i in order], batching, max_new_tokens, 1, desc)
    for batch in tqdm(plan, desc=desc, unit="batch"):
        idx = order[batch.start : batch.stop]
        width = max(len(encoded[i]) for i in idx)
        budget = max_new_tokens if context is None else min(max_new_tokens, context - width)
        if budget < 1:
            raise GenerationError(f"a prompt of {width} tokens leaves no room in the model's context of {context}")
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_logits)
        cache, logits = out.past_key_values, out.logits[:, -1]
        active = list(idx)
        tokens: dict[int, list[int]] = {i: [] for i in idx}
        for step in range(budget):
            chosen = logits.argmax(-1).tolist()
            keep = []
            for row, (i, token) in enumerate(zip(active, chosen, strict=True)):
                if token == eos:
                    results[i] = _result(tokenizer, tokens[i], stop, ends, stopped=True)
                    continue
                tokens[i].append(token)
                if (
                    check_text
                    and stop_at(tokenizer.decode(tokens[i], skip_special_tokens=True), stop, ends) is not None
                ):
                    results[i] = _result(tokenizer, tokens[i], stop, ends, stopped=True)
                elif step + 1 == budget:
                    results[i] = _result(tokenizer, tokens[i], stop, ends, stopped=False)
                else:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):  # finished sequences leave the batch and the cache
                rows = torch.tensor(keep, device=device)
                cache.batch_select_indices(rows)
                mask = mask[rows]
                active = [active[r] for r in keep]
            chosen_kept = torch.tensor([[chosen[r]] for r in keep], device=device)
            mask = torch.cat([mask, mask.new_ones((len(keep), 1))], dim=1)
            positions = mask.sum(-1, keepdim=True) - 1
            out = model(
                input_ids=chosen_kept,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits = out.past_key_values, out.logits[:, -1]
    model.train(was_training)
    return results


def _plan(model, lengths, batching, max_new_tokens, per_prompt, desc) -> list[range]:
    """The batches over the sorted prompts (:func:`ftcot.evaluation.memory.batches_for`), said in
    the log where memory made them smaller than asked."""
    batching = as_batching(batching)
    plan = batches_for(model, lengths, batching, max_new_tokens, per_prompt)
    largest = max((len(b) for b in plan), default=0)
    if batching.size == AUTO:
        log.info("%s: batches of up to %d prompts, as memory allows", desc, largest)
    elif any(len(b) < max(1, batching.size // per_prompt) for b in plan[:-1]):
        log.warning(
            "%s: free memory holds batches of %d prompts, fewer than evaluate.batch_size %d asks "
            "(predictions can differ in the last bits from a run with full batches)",
            desc,
            largest,
            batching.size,
        )
    return plan


def _result(tokenizer, tokens: list[int], stop: Sequence[str], ends, stopped: bool) -> dict:
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    cut = stop_at(text, stop, ends)
    if cut is not None:
        text, stopped = text[:cut], True
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"text": text, "generated_tokens": len(tokens), "truncated": not stopped}


@torch.inference_mode()
def generate_samples(
    model,
    tokenizer,
    prompts: Sequence[str],
    batching: Batching | int | str,
    max_new_tokens: int,
    num_samples: int,
    temperature: float,
    seed: int,
    desc: str = "sample",
    ends: Callable[[str], int | None] | None = None,
) -> list[list[dict]]:
    """``num_samples`` completions per prompt, sampled at ``temperature`` (no top-k/top-p cut),
    as :func:`generate_greedy` otherwise (``ends`` cuts each completion where its answer is
    complete). Seeded: the same inputs give the same samples."""
    torch.manual_seed(seed)
    sampling = {
        "do_sample": True,
        "temperature": temperature,
        "top_k": 0,
        "top_p": 1.0,
        "num_return_sequences": num_samples,
    }
    groups = _generate_padded_left(model, tokenizer, prompts, batching, max_new_tokens, desc, **sampling)
    return [[_ended(sample, ends, tokenizer) for sample in group] for group in groups]


def _generate_padded_left(
    model, tokenizer, prompts, batching, max_new_tokens, desc, stop=(), **sampling
) -> list[list[dict]]:
    original_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return _generate(model, tokenizer, prompts, batching, max_new_tokens, desc, stop, **sampling)
    finally:
        # The tokenizer may be a training collator's too (validation during training), which
        # must keep padding on the right.
        tokenizer.padding_side = original_side


def _generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    batching: Batching | int | str,
    max_new_tokens: int,
    desc: str,
    stop: Sequence[str] = (),
    **sampling,
) -> list[list[dict]]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    results: list[list[dict]] = [[] for _ in prompts]
    per_prompt = sampling.get("num_return_sequences", 1)
    if not sampling:
        sampling = {"do_sample": False}
    if stop:  # generate() stops each sequence there; the text is cut below
        sampling = {**sampling, "stop_strings": list(stop), "tokenizer": tokenizer}
    eos = tokenizer.eos_token_id
    encoder_decoder = is_encoder_decoder(model)
    # A decoder's prompt and completion share its context; None: no fixed limit.
    context = None if encoder_decoder else getattr(model.config, "max_position_embeddings", None)
    # batching counts sequences: a prompt's samples are num_return_sequences of them.
    plan = _plan(model, [len(encoded[i]) for i in order], batching, max_new_tokens, per_prompt, desc)
    for batch_range in tqdm(plan, desc=desc, unit="batch"):
        idx = order[batch_range.start : batch_range.stop]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
        prompt_len = batch["input_ids"].shape[1]
        budget = max_new_tokens if context is None else min(max_new_tokens, context - prompt_len)
        if budget < 1:
            raise GenerationError(f"a prompt of {prompt_len} tokens leaves no room in the model's context of {context}")
        out = model.generate(
            **batch,
            **sampling,
            max_new_tokens=budget,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
        # (batch, generated): a decoder repeats the prompt; an encoder-decoder starts with its
        # decoder start token.
        new_tokens = out[:, 1:] if encoder_decoder else out[:, prompt_len:]
        # generate() returns a prompt's samples next to each other.
        owners = [i for i in idx for _ in range(per_prompt)]
        for row, i in zip(new_tokens.tolist(), owners, strict=True):
            stopped = eos in row
            tokens = row[: row.index(eos)] if stopped else row
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            cut = min((text.index(s) for s in stop if s in text), default=None)
            if cut is not None:
                text, stopped = text[:cut], True
                tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            results[i].append({"text": text, "generated_tokens": len(tokens), "truncated": not stopped})
    model.train(was_training)
    return results


class HFGenerator:
    """The ``hf`` engine (:mod:`ftcot.evaluation.engines`): the student in this process."""

    def __init__(self, model, tokenizer, batching: Batching | int | str = 64):
        self.model, self.tokenizer, self.batching = model, tokenizer, batching
        self.encoder_decoder = is_encoder_decoder(model)

    @classmethod
    def load(cls, name: str, precision: str, batching: Batching | int | str, what: str) -> HFGenerator:
        """The student ``name`` on this machine's device, its weights in ``precision``."""
        from ftcot.numerics import compute_device

        model, tokenizer = load_pretrained(name, dtype=inference_dtype(precision), what=what)
        return cls(model.to(compute_device()), tokenizer, batching)

    def greedy(self, prompts, max_new_tokens, desc="generate", stop=(), ends=None) -> list[dict]:
        return generate_greedy(self.model, self.tokenizer, prompts, self.batching, max_new_tokens, desc, stop, ends)

    def samples(self, prompts, max_new_tokens, num_samples, temperature, seed, ends=None) -> list[list[dict]]:
        return generate_samples(
            self.model,
            self.tokenizer,
            prompts,
            self.batching,
            max_new_tokens,
            num_samples=num_samples,
            temperature=temperature,
            seed=seed,
            ends=ends,
        )
