"""Loading the student: the built-in tiny GPT-2, or any causal LM by hub id or local path."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
    set_seed,
)

from ftcot.config import StudentParams
from ftcot.pretrained import PretrainedUnavailable, resolve_pretrained

TINY_GPT2 = "tiny-gpt2"
TINY_T5 = "tiny-t5"


class StudentLoadError(RuntimeError):
    """``student.model`` could not be loaded."""


PAD_TOKEN, EOS_TOKEN = "<pad>", "</s>"


def build_tiny_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the student's own training texts: no download, any
    input encodable (unseen words fall back to bytes), and about 4x fewer tokens than raw bytes,
    which makes the tiny student both faster and easier to train. Padding (id 0) is distinct from
    EOS (id 1), so EOS is always learned. Training is deterministic for the same corpus.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN)


def build_tiny_gpt2(params: StudentParams, tokenizer, seed: int) -> GPT2LMHeadModel:
    set_seed(seed)  # the weights are random: seed them so the model is reproducible
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=params.max_length,
        n_embd=params.tiny.n_embd,
        n_layer=params.tiny.n_layer,
        n_head=params.tiny.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def is_encoder_decoder(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def load_model(name: str | Path, dtype: torch.dtype | None = None):
    """A causal or sequence-to-sequence LM, whichever its config says."""
    config = AutoConfig.from_pretrained(name)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(name, dtype=dtype)


def build_tiny_t5(params: StudentParams, tokenizer, seed: int) -> T5ForConditionalGeneration:
    """A tiny encoder-decoder (T5) of the same size as the tiny GPT-2, from a config."""
    set_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=params.tiny.n_embd,
        d_kv=params.tiny.n_embd // params.tiny.n_head,
        d_ff=4 * params.tiny.n_embd,
        num_layers=params.tiny.n_layer,
        num_heads=params.tiny.n_head,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config)


def load_pretrained(name: str, dtype: torch.dtype | None = None):
    """Tokenizer and model (causal or seq2seq) from a hub id or folder; errors name the parameter."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = load_model(name, dtype=dtype)
    except (OSError, ValueError) as err:
        raise StudentLoadError(
            f"student.model = {name!r} could not be loaded ({type(err).__name__}: {err}). "
            "Without internet, use 'tiny-gpt2', 'tiny-t5', 'smollm2-135m' or a local folder with a saved model."
        ) from None
    if tokenizer.pad_token is None:
        # Safe: labels are padded with -100 by position (not by token id), so EOS stays in the loss.
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_student(params: StudentParams, seed: int, corpus: Iterable[str] = ()):
    """The student to fine-tune and its tokenizer. ``corpus`` (the training texts) is used only
    by the tiny GPT-2, whose tokenizer is trained on it."""
    if params.model == TINY_GPT2:
        tokenizer = build_tiny_tokenizer(corpus, params.tiny.vocab_size)
        return build_tiny_gpt2(params, tokenizer, seed), tokenizer
    if params.model == TINY_T5:
        tokenizer = build_tiny_tokenizer(corpus, params.tiny.vocab_size)
        return build_tiny_t5(params, tokenizer, seed), tokenizer
    return load_named_pretrained(params.model)


def load_named_pretrained(name: str):
    """``student.model`` as a pretrained model: a built-in name (``smollm2-135m``), hub id or folder."""
    try:
        local = resolve_pretrained(name)  # built-in names such as smollm2-135m
    except PretrainedUnavailable as err:
        raise StudentLoadError(f"student.model = {name!r}: {err}") from None
    return load_pretrained(str(local) if local else name)


def wrap_lora(model, params: StudentParams):
    """peft LoRA around ``model``; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    lora = params.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="SEQ_2_SEQ_LM" if is_encoder_decoder(model) else "CAUSAL_LM",
    )
    return get_peft_model(model, config)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
