"""The student models: the built-in tiny ones (Llama, GPT-2, T5) built from ``student.tiny`` with
their tokenizers, or a pretrained model by name, hub id or local folder (:func:`load_pretrained`)."""

from __future__ import annotations

import importlib.util
import logging
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
    set_seed,
)

from ftcot.config import StudentParams, TinyModelParams
from ftcot.errors import FtcotError
from ftcot.numerics import compute_device, cpu_has_native_bf16, resolve_precision
from ftcot.student.smollm2 import SMOLLM2, SMOLLM2_HUB_ID, PretrainedUnavailable, smollm2_folder

log = logging.getLogger("ftcot")

TINY_GPT2 = "tiny-gpt2"
TINY_LLAMA = "tiny-llama"
TINY_T5 = "tiny-t5"
# Built from student.tiny and a seed: no pretrained weights exist anywhere but in the saved student.
TINY_MODELS = (TINY_GPT2, TINY_LLAMA, TINY_T5)


class StudentLoadError(FtcotError, RuntimeError):
    """``student.model`` could not be loaded."""


PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "</s>", "<unk>"
# Every printable ASCII character has an id whether or not the training texts use it, so that any
# ASCII input encodes without loss (an unseen letter keeps its place, with an untrained embedding).
CHAR_ALPHABET = string.printable


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


def build_char_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character: printable ASCII plus whatever other characters the training texts
    hold; any other character becomes ``<unk>`` (dropped when decoding), never an error.

    BPE merges whole names into single tokens, so a model from scratch sees "Ashley" as one id and
    cannot read its last letter off it (it would have to memorise each token's spelling); character
    by character, the last letter is the token before the space or quote. Sequences are 3-4x
    longer than with BPE. Ids: pad 0, EOS 1, unk 2, then the characters in code-point order, so the
    same corpus always gives the same tokenizer.
    """
    chars = sorted(set(CHAR_ALPHABET).union(*map(set, corpus)))
    vocab = {token: i for i, token in enumerate([PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, *chars])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    tokenizer.decoder = decoders.Fuse()  # concatenate, without the spaces WordLevel would put between tokens
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,  # ' .' must decode as ' .', as it was written
    )


# A word is a token of its own when at least this share of the training texts contains it.
# Template words of the synthetic tasks are in a third to all of them; each of the 406 first names
# is in about 1%, so names are always spelled out.
WORD_MIN_SHARE = 0.05


def build_word_char_tokenizer(corpus: Iterable[str], min_share: float = WORD_MIN_SHARE) -> PreTrainedTokenizerFast:
    """Frequent words as single tokens, every other word spelled byte by byte (no merges).

    The words are those of the byte-level pre-tokenizer (a leading space is part of the word:
    " coin"), kept when at least ``min_share`` of the training texts contain them. A rare word
    (a name, a concatenation of letters) is spelled from the 256 byte tokens, its leading space a
    token of its own, so a name is the same tokens after a space or a quote, its last letter is a
    token of its own, and the model can copy it letter by letter with embeddings trained on
    thousands of occurrences instead of a handful (BPE gives each name its own rarely seen tokens).
    Sequences are about 1.3x (Coin Flip) to 1.6x (Last Letters) those of BPE, against 3-4x
    character by character. Deterministic for the same corpus; any input encodes (bytes).
    """
    texts = list(corpus)
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    documents: Counter[str] = Counter()
    for text in texts:
        documents.update({word for word, _ in pre.pre_tokenize_str(text)})
    words = sorted(w for w, n in documents.items() if len(w) > 1 and n >= min_share * len(texts))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([PAD_TOKEN, EOS_TOKEN, *alphabet, *words])}
    # ignore_merges: a word found in the vocabulary is one token; without merges, any other is bytes.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, clean_up_tokenization_spaces=False
    )


def build_student_tokenizer(tiny: TinyModelParams, corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """The tiny students' tokenizer, as ``student.tiny.tokenizer`` says, from the training texts."""
    if tiny.tokenizer == "char":
        return build_char_tokenizer(corpus)
    if tiny.tokenizer == "word_char":
        return build_word_char_tokenizer(corpus)
    return build_tiny_tokenizer(corpus, tiny.vocab_size)


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


def build_tiny_llama(params: StudentParams, tokenizer, seed: int) -> LlamaForCausalLM:
    """A tiny Llama-style decoder (rotary positions, RMSNorm, SwiGLU) of the tiny GPT-2's shape.

    Rotary positions make attention depend on the distance between tokens, so the heads that copy
    (look at the previous token, then at what followed the same tokens in the question) are the
    same at every position and form within a few hundred steps; GPT-2's learned absolute
    positions must be learned position by position, and the tiny GPT-2 never learned to copy a
    name from the question in this pipeline's budget.
    """
    set_seed(seed)
    width = params.tiny.n_embd
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        # SwiGLU's three matrices at twice the width: fewer weights than GPT-2's MLP (6 against 8
        # times width squared) and, measured on this pipeline, faster and no less accurate than 4x.
        intermediate_size=2 * width,
        num_hidden_layers=params.tiny.n_layer,
        num_attention_heads=params.tiny.n_head,
        num_key_value_heads=params.tiny.n_head,
        max_position_embeddings=params.max_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def is_encoder_decoder(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def attention_implementation() -> str | None:
    """The attention kernel a student loads with: on a GPU, flash-attention 2 where the package is
    installed, else PyTorch's scaled-dot-product attention; on a CPU, the library's default (what
    the byte-identical default run was made with)."""
    if compute_device() != "cuda":
        return None
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def four_bit_config():
    """bitsandbytes' NF4 quantization of a frozen base (QLoRA); a clear error where it cannot run."""
    if compute_device() != "cuda":
        raise StudentLoadError(
            "student.quantization: 4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels) and this machine has none: "
            "use student.quantization: none"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StudentLoadError("student.quantization: 4bit needs bitsandbytes: pip install -e '.[qlora]'")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def _auto_model(name: str | Path, dtype: torch.dtype | None = None, quantization: str = "none"):
    """:func:`load_pretrained`'s weights: a causal or sequence-to-sequence LM, whichever its config
    says, with the device's attention kernel (:func:`attention_implementation`), its base in 4 bits
    for ``quantization: 4bit``."""
    config = AutoConfig.from_pretrained(name)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    options: dict = {"dtype": dtype}
    if (attention := attention_implementation()) is not None:
        options["attn_implementation"] = attention
    if quantization == "4bit":
        options["quantization_config"] = four_bit_config()
    return auto.from_pretrained(name, **options)


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


def load_pretrained(
    name: str, dtype: torch.dtype | None = None, quantization: str = "none", what: str = "student.model"
):
    """Tokenizer and model (causal or seq2seq) for ``student.model`` as a pretrained model: a built-in
    name (``smollm2-135m``, converted once for offline use), a hub id or a folder; errors name the
    parameter (``what``). The one loader of pretrained students (fine-tuning, prompting, evaluation of a
    saved student)."""
    try:
        local = smollm2_folder(name)  # None for names that are not built in
    except PretrainedUnavailable as err:
        raise StudentLoadError(f"{what} = {name!r}: {err}") from None
    source = str(local) if local else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = _auto_model(source, dtype=dtype, quantization=quantization)
    except (OSError, ValueError) as err:
        raise StudentLoadError(
            f"{what} = {name!r} could not be loaded ({type(err).__name__}: {err}). "
            "Without internet, use 'tiny-llama', 'tiny-gpt2', 'tiny-t5', 'smollm2-135m' "
            "or a local folder with a saved model."
        ) from None
    if tokenizer.pad_token is None:
        # Safe: labels are padded with -100 by position (not by token id), so EOS stays in the loss.
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_student(params: StudentParams, seed: int, corpus: Iterable[str] = ()):
    """The student to fine-tune and its tokenizer. ``corpus`` (the training texts) is used only
    by the tiny students, whose tokenizer is built from it."""
    if params.model == TINY_GPT2:
        tokenizer = build_student_tokenizer(params.tiny, corpus)
        return build_tiny_gpt2(params, tokenizer, seed), tokenizer
    if params.model == TINY_LLAMA:
        tokenizer = build_student_tokenizer(params.tiny, corpus)
        return build_tiny_llama(params, tokenizer, seed), tokenizer
    if params.model == TINY_T5:
        tokenizer = build_student_tokenizer(params.tiny, corpus)
        return build_tiny_t5(params, tokenizer, seed), tokenizer
    model, tokenizer = load_pretrained(params.model, quantization=params.quantization)
    if params.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.gradient_checkpointing)
    return model, tokenizer


def student_precision(model: str, precision: str) -> str:
    """``student.precision`` of ``student.model`` as it runs on this device
    (:func:`ftcot.numerics.resolve_precision`): the students trained from scratch count as not pretrained."""
    precision = resolve_precision(precision, pretrained=model not in TINY_MODELS)
    if precision == "fp16" and not torch.cuda.is_available():
        raise StudentLoadError(
            "student.precision: fp16 is for CUDA GPUs without bf16, and this machine has none: use bf16, fp32 or auto"
        )
    if precision == "bf16" and not torch.cuda.is_available() and not cpu_has_native_bf16():
        log.warning(
            "student.precision: bf16 on a CPU without AVX-512 BF16 or AMX: torch emulates it, more slowly than fp32"
        )
    return precision


def inference_dtype(precision: str) -> torch.dtype | None:
    """The weights' type a student decodes in: bfloat16 for ``bf16`` (half the memory, and no
    per-step casting as under autocast: 1.7x the questions/s of autocast for SmolLM2 on 2 CPU
    cores), float16 for ``fp16``, as saved (float32) for ``fp32``."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def wrap_lora(model, params: StudentParams):
    """peft LoRA around ``model``; only the adapters train."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    lora = params.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="SEQ_2_SEQ_LM" if is_encoder_decoder(model) else "CAUSAL_LM",
        # GPT-2's projections are Conv1D, whose weights are stored transposed: say so, rather than
        # have peft guess it and warn at every run.
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
    )
    return get_peft_model(model, config)


def adapter_base_name(model_name: str) -> str:
    """What the adapter names as its base: the hub id (never a machine's path, which would also make
    the output differ from machine to machine); a local folder by its name only."""
    if model_name == SMOLLM2:
        return SMOLLM2_HUB_ID
    return Path(model_name).name if Path(model_name).is_dir() else model_name


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
