"""Batched decoding (greedy, or sampled for self-consistency) of decoder and encoder-decoder students."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ftcot.errors import FtcotError


class GenerationError(FtcotError, ValueError):
    """The prompts do not fit the model's context with the asked generation length."""


@torch.inference_mode()
def generate_greedy(
    model,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    desc: str = "generate",
    stop: Sequence[str] = (),
) -> list[dict]:
    """Greedy completions of ``prompts``, in their order.

    Prompts are sorted by length so each batch pads little, left-padded (a decoder continues from
    the last position; an encoder-decoder ignores padding through its mask), decoded with the KV
    cache and stopped at EOS. Returns, per prompt, the
    completion ``text`` (special tokens removed), its token count and whether it hit
    ``max_new_tokens`` (or the end of the model's context) without EOS (``truncated``).
    A completion also ends at the first of the ``stop`` strings (cut off, not included): a
    few-shot prompt's next "Q:".
    """
    groups = _generate_padded_left(model, tokenizer, prompts, batch_size, max_new_tokens, desc, stop=stop)
    return [group[0] for group in groups]


@torch.inference_mode()
def generate_samples(
    model,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    num_samples: int,
    temperature: float,
    seed: int,
    desc: str = "sample",
) -> list[list[dict]]:
    """``num_samples`` completions per prompt, sampled at ``temperature`` (no top-k/top-p cut),
    as :func:`generate_greedy` otherwise. Seeded: the same inputs give the same samples."""
    torch.manual_seed(seed)
    sampling = {
        "do_sample": True,
        "temperature": temperature,
        "top_k": 0,
        "top_p": 1.0,
        "num_return_sequences": num_samples,
    }
    batch = max(1, batch_size // num_samples)  # batch_size counts sequences
    return _generate_padded_left(model, tokenizer, prompts, batch, max_new_tokens, desc, **sampling)


def _generate_padded_left(
    model, tokenizer, prompts, batch_size, max_new_tokens, desc, stop=(), **sampling
) -> list[list[dict]]:
    original_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return _generate(model, tokenizer, prompts, batch_size, max_new_tokens, desc, stop, **sampling)
    finally:
        # The tokenizer may be a training collator's too (validation during training), which
        # must keep padding on the right.
        tokenizer.padding_side = original_side


def _generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int,
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
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    # A decoder's prompt and completion share its context; None: no fixed limit.
    context = None if encoder_decoder else getattr(model.config, "max_position_embeddings", None)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start : start + batch_size]
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
