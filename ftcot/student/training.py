"""Fine-tuning the student with the transformers ``Trainer``.

Loss is on target tokens only (prompt positions are labelled -100), EOS is part of the target,
batches are padded dynamically and grouped by length, and truncations are counted.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    DataCollatorForSeq2Seq,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from ftcot.config import StudentParams
from ftcot.errors import FtcotError
from ftcot.paths import ADAPTER_DIR
from ftcot.student.checkpoints import last_complete_checkpoint
from ftcot.student.formats import FORMAT_VERSION, student_prompt, student_target
from ftcot.student.models import (
    adapter_base_name,
    count_parameters,
    is_encoder_decoder,
    load_student,
    student_precision,
    wrap_lora,
)


class EmptyTrainingSetError(FtcotError, ValueError):
    """Nothing to train on (e.g. the filter kept no rationale)."""


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def tokenize_example(
    tokenizer, prompt: str, target: str, max_length: int, encoder_decoder: bool = False
) -> TokenizedExample:
    """Decoder: ``prompt + target + EOS`` with the prompt masked out of the loss. Encoder-decoder:
    ``prompt + EOS`` in, ``target + EOS`` as labels. Cut at ``max_length``."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if encoder_decoder:
        source = [*prompt_ids, tokenizer.eos_token_id]
        truncated = len(source) > max_length or len(target_ids) > max_length
        return TokenizedExample(source[:max_length], target_ids[:max_length], truncated)
    input_ids = prompt_ids + target_ids
    labels = [-100] * len(prompt_ids) + target_ids
    truncated = len(input_ids) > max_length
    return TokenizedExample(input_ids[:max_length], labels[:max_length], truncated)


def build_dataset(
    examples: Sequence[dict], variant: str, tokenizer, max_length: int, encoder_decoder: bool = False
) -> tuple[Dataset, int]:
    """A ``datasets.Dataset`` of tokenized examples and the number that were truncated."""
    rows, truncated = [], 0
    for ex in examples:
        t = tokenize_example(
            tokenizer,
            student_prompt(ex["question"], encoder_decoder),
            student_target(variant, ex["answer"], ex.get("rationale"), encoder_decoder),
            max_length,
            encoder_decoder,
        )
        truncated += t.truncated
        rows.append({"input_ids": t.input_ids, "attention_mask": [1] * len(t.input_ids), "labels": t.labels})
    return Dataset.from_list(rows), truncated


class QuietProgress(ProgressCallback):
    """The Trainer's progress bars without the metrics dict it prints at every logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        pass


class TiedKeysFilter(logging.Filter):
    """Drops the Trainer's "missing keys ... ['lm_head.weight']" warning when loading the best
    checkpoint, when every key it names is a tied weight: safetensors stores a shared tensor once,
    and the loaded model keeps its output layer tied to the embedding, so nothing is missing."""

    PREFIX = "There were missing keys in the checkpoint model loaded: "

    def __init__(self, model):
        super().__init__()
        tied = getattr(model, "_tied_weights_keys", None) or {}
        tie = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
        self.tied = set(tied) if tie else set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        try:
            missing = set(ast.literal_eval(message[len(self.PREFIX) :].rstrip(".")))
        except (ValueError, SyntaxError):
            return True
        return not (missing and missing <= self.tied)


class ValidationAccuracy(TrainerCallback):
    """Greedy-decodes the validation questions after each evaluation and scores them with the
    answer rules: the accuracy the test will measure, tracked on validation data only.

    The accuracy goes into the evaluation's entry of ``state.log_history`` as ``eval_accuracy``.
    """

    def __init__(self, examples: Sequence[dict], variant: str, tokenizer, encoder_decoder: bool, max_new_tokens: int):
        self.examples = list(examples)
        self.variant = variant
        self.tokenizer = tokenizer
        self.encoder_decoder = encoder_decoder
        self.max_new_tokens = max_new_tokens

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs) -> None:
        from ftcot.evaluation.generation import generate_greedy
        from ftcot.evaluation.scoring import score_predictions, summarize_predictions

        prompts = [student_prompt(ex["question"], self.encoder_decoder) for ex in self.examples]
        generations = generate_greedy(
            model, self.tokenizer, prompts, args.per_device_eval_batch_size, self.max_new_tokens, desc="validation"
        )
        accuracy = summarize_predictions(score_predictions(self.examples, generations, self.variant))["accuracy"]
        if metrics is not None:
            metrics["eval_accuracy"] = accuracy  # read by LiveCurves.on_evaluate
        # The Trainer logged this evaluation just before calling here. Add the accuracy to that entry:
        # the log history is saved with each checkpoint, so a resumed run still has every epoch's.
        last = state.log_history[-1] if state.log_history else {}
        if last.get("step") == state.global_step and "eval_loss" in last:
            last["eval_accuracy"] = accuracy


class LogAtEpochEnd(TrainerCallback):
    """Logs the training loss at every epoch end, where the checkpoints are saved.

    The Trainer averages each logged loss over the steps since its previous log, counted from the
    start of the current process; a checkpoint between two logs would make the first log after a
    resume (and the curves and mean loss built on it) differ from an uninterrupted run's. Logged at
    every checkpoint, nothing is pending when one is saved.
    """

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_log = True
        return control


class LiveCurves(TrainerCallback):
    """Training curves to DVCLive: loss, learning rate, validation loss and accuracy by step. Only
    these (no timings, no machine paths), so the files are the same on every run, resumed or not."""

    KEYS: ClassVar[dict[str, str]] = {
        "loss": "train/loss",
        "learning_rate": "train/learning_rate",
        "eval_loss": "eval/loss",
        "eval_accuracy": "eval/accuracy",
    }

    def __init__(self, live_dir: str | Path):
        from dvclive import Live

        self.live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None)

    def _write(self, step: int, logs: dict) -> None:
        for key, name in self.KEYS.items():
            if key in logs:
                self.live.step = step
                self.live.log_metric(name, round(float(logs[key]), 6))

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        # A resumed run starts with the log history of its checkpoint: write it out first, in the
        # order it was logged, so the files are those of an uninterrupted run rather than curves that
        # begin at the resumed step. (A fresh run has no history yet.)
        if state.is_world_process_zero:
            for entry in state.log_history:
                self._write(entry["step"], entry)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if state.is_world_process_zero and logs:
            self._write(state.global_step, logs)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        # The validation accuracy is added to the metrics after they were logged (see
        # ValidationAccuracy, which runs first): record it here, as the replay above does.
        if state.is_world_process_zero and metrics and "eval_accuracy" in metrics:
            self._write(state.global_step, {"eval_accuracy": metrics["eval_accuracy"]})

    def on_train_end(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero:
            self.live.end()


def train_student(
    model,
    tokenizer,
    train_ds: Dataset,
    val_ds: Dataset,
    params: StudentParams,
    seed: int,
    checkpoint_dir: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
):
    """Runs the ``Trainer`` and returns its ``TrainOutput`` and state.

    A checkpoint is saved every epoch in ``checkpoint_dir`` (a scratch folder if None), and an
    interrupted run given the same folder resumes from its last complete checkpoint (incomplete
    ones, cut off while being written, are removed with a warning). With a validation set, the
    epoch with the lowest validation loss is the one kept: model selection uses the validation
    split, never the test set.

    ``TrainOutput.training_loss`` covers the steps run in this process only; see
    ``mean_training_loss`` for the whole run's.
    """
    steps_per_epoch = max(1, -(-len(train_ds) // (params.batch_size * params.gradient_accumulation_steps)))
    precision = student_precision(params.model, params.precision)
    bf16 = precision == "bf16"  # autocast (over a bf16 base for LoRA: finetune)
    has_val = len(val_ds) > 0

    with tempfile.TemporaryDirectory(prefix="ftcot-trainer-") as scratch:
        output_dir = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        # Every process checks (they pass the same path to the Trainer); one removes what is incomplete.
        resume = last_complete_checkpoint(output_dir, remove_incomplete=int(os.environ.get("RANK", "0")) == 0)
        args = TrainingArguments(
            output_dir=str(output_dir),
            num_train_epochs=params.epochs,
            per_device_train_batch_size=params.batch_size,
            per_device_eval_batch_size=params.batch_size,
            gradient_accumulation_steps=params.gradient_accumulation_steps,
            learning_rate=params.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=params.warmup_ratio,
            weight_decay=params.weight_decay,
            train_sampling_strategy="group_by_length",
            logging_steps=max(1, steps_per_epoch // 4),
            eval_strategy="epoch" if has_val else "no",
            save_strategy="epoch",
            save_total_limit=2,  # the best and the last
            load_best_model_at_end=has_val,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            report_to="none",
            seed=seed,
            data_seed=seed,
            bf16=bf16,
            fp16=precision == "fp16",  # autocast with a loss scaler, over fp32 weights
            gradient_checkpointing=params.gradient_checkpointing,
            # Non-reentrant: works with frozen inputs (LoRA), as the reentrant variant does not.
            gradient_checkpointing_kwargs={"use_reentrant": False} if params.gradient_checkpointing else None,
            # Without a GPU, say so: accelerate then runs several processes (torchrun) as DDP on
            # gloo rather than as independent copies.
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        # For encoder-decoders, the model makes decoder inputs from the labels (shifted right).
        collator = DataCollatorForSeq2Seq(
            tokenizer, model=model if is_encoder_decoder(model) else None, padding=True, label_pad_token_id=-100
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds if has_val else None,
            data_collator=collator,
            callbacks=[LogAtEpochEnd(), *callbacks],
        )
        # Progress bars stay; the dict the Trainer prints at every log step goes (it is in the curves).
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(QuietProgress())
        tied_filter = TiedKeysFilter(model)
        trainer_log = logging.getLogger("transformers.trainer")
        trainer_log.addFilter(tied_filter)
        try:
            return trainer.train(resume_from_checkpoint=str(resume) if resume else None), trainer.state
        finally:
            trainer_log.removeFilter(tied_filter)


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


def mean_training_loss(log_history: Sequence[dict], steps: int) -> float:
    """The mean training loss per step over a whole run, from its log history: what the Trainer's
    ``TrainOutput.training_loss`` is for an uninterrupted run, bit for bit, and the same number for
    a run resumed from a checkpoint (where the Trainer's covers the steps after the resume only).

    The Trainer adds up each step's loss in a float32 tensor, and at each log divides the sum by the
    steps since the previous log (``loss``) and adds it (as a Python float) to a running total, which
    it divides by the steps at the end. Multiplying ``loss`` back and rounding to float32 recovers
    each sum exactly (the float64 division and product are off by far less than a float32 ulp), and
    adding them in the same order gives the same total. Nothing is left unlogged at the end, since
    ``LogAtEpochEnd`` logs at the last step.
    """
    total, last_step = 0.0, 0
    for entry in log_history:
        if "loss" in entry:
            total += float(np.float32(entry["loss"] * (entry["step"] - last_step)))
            last_step = entry["step"]
    return total / max(steps, 0.001)  # the Trainer's guard against zero steps


# The code a training run's checkpoints depend on: after a change to it, a rerun starts afresh
# rather than resume what the old code began.
TRAINING_CODE = ("ftcot/student", "ftcot/numerics.py", "ftcot/config.py")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def training_code_digest(root: Path = PACKAGE_ROOT) -> str:
    from ftcot.provenance import code_digest

    return code_digest(root, TRAINING_CODE)


def checkpoint_key(params: StudentParams, seed: int, variant: str, train: Sequence[dict], val: Sequence[dict]) -> str:
    """Names the checkpoint folder of one training run: a rerun with the same inputs and the same
    training code resumes it."""
    inputs = [params.model_dump(), seed, variant, list(train), list(val), training_code_digest()]
    blob = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def save_adapter(model, params: StudentParams, folder: Path) -> None:
    for config in model.peft_config.values():
        config.base_model_name_or_path = adapter_base_name(params.model)
    model.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)  # peft's template card: the export writes a real one


def _onto_fp32_base(trained, params: StudentParams, seed: int, texts: list[str]):
    """The trained adapters of ``trained`` (over a bf16 base) on the student's fp32 weights, as loaded."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    base, _ = load_student(params, seed, corpus=texts)
    fresh = wrap_lora(base, params)
    set_peft_model_state_dict(fresh, get_peft_model_state_dict(trained))
    return fresh


def finetune(
    train_examples: Sequence[dict],
    val_examples: Sequence[dict],
    variant: str,
    params: StudentParams,
    seed: int,
    output_dir: str | Path,
    task: str = "",
    checkpoint_dir: str | Path | None = None,
    live_dir: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[dict, list[dict]]:
    """Trains a student and saves it (merged, for LoRA) with its tokenizer to ``output_dir``.

    Returns the training metrics and the loss curve (one row per logging step and epoch end).
    Both are built from the Trainer's log history, which checkpoints carry: a run interrupted and
    resumed from its checkpoint returns the same as an uninterrupted one (and writes the same files
    to ``live_dir``).
    """
    if not train_examples:
        raise EmptyTrainingSetError(
            f"task {task!r}, variant {variant!r}: the training set is empty (0 kept examples); "
            "check the teacher and filter metrics, or raise diversity / the number of questions"
        )
    set_seed(seed)
    texts = [
        student_prompt(ex["question"]) + student_target(variant, ex["answer"], ex.get("rationale"))
        for ex in train_examples
    ]
    model, tokenizer = load_student(params, seed, corpus=texts)
    enc_dec = is_encoder_decoder(model)
    if not enc_dec and getattr(model, "loss_type", None) is None:
        # GPT2LMHeadModel's class name names no loss: say which, rather than be warned at every run.
        model.loss_type = "ForCausalLM"
    precision = student_precision(params.model, params.precision)
    # LoRA in bf16: the frozen base in bf16 (half the memory traffic, no cast of every weight at every
    # step as under autocast alone); the adapters, their gradients and the optimizer stay fp32 (peft
    # keeps adapters fp32 over a bf16 base), and the saved model is merged into the fp32 base.
    bf16_base = precision == "bf16" and params.tuning == "lora"
    if bf16_base:
        model = model.to(torch.bfloat16)
    if params.tuning == "lora":
        model = wrap_lora(model, params)
    trainable, total = count_parameters(model)

    train_ds, train_truncated = build_dataset(train_examples, variant, tokenizer, params.max_length, enc_dec)
    val_ds, val_truncated = build_dataset(val_examples, variant, tokenizer, params.max_length, enc_dec)
    accuracy = ValidationAccuracy(val_examples, variant, tokenizer, enc_dec, params.val_max_new_tokens)
    # Order matters: the accuracy is added to the evaluation's metrics before LiveCurves reads them.
    callbacks = [*callbacks, *([accuracy] if val_examples and params.val_accuracy else [])]
    callbacks += [LiveCurves(live_dir)] if live_dir is not None else []
    result, state = train_student(model, tokenizer, train_ds, val_ds, params, seed, checkpoint_dir, callbacks)
    history = state.log_history

    if state.is_world_process_zero:  # under torchrun / accelerate, one process writes
        output_dir = Path(output_dir)
        if params.tuning == "lora":
            if bf16_base or params.quantization != "none":
                # The adapters onto the base as loaded, unquantized: what evaluation and export read.
                model = _onto_fp32_base(model, params.model_copy(update={"quantization": "none"}), seed, texts)
            save_adapter(model, params, output_dir / ADAPTER_DIR)
            # Evaluation loads plain merged weights: one code path for every student.
            model = model.merge_and_unload()
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)

    curve = [
        {"step": h["step"], "epoch": _round(h["epoch"]), **{k: _round(h[k]) for k in ("loss", "eval_loss") if k in h}}
        for h in history
        if "loss" in h or "eval_loss" in h
    ]
    eval_losses = [row["eval_loss"] for row in curve if "eval_loss" in row]
    val_accuracy = [
        {"step": h["step"], "epoch": _round(h["epoch"]), "accuracy": h["eval_accuracy"]}
        for h in history
        if "eval_accuracy" in h
    ]
    metrics = {
        "format_version": FORMAT_VERSION,
        "tuning": params.tuning,
        "model": params.model,
        "precision": precision,
        "architecture": "encoder-decoder" if enc_dec else "decoder",
        "train_examples": len(train_ds),
        "val_examples": len(val_ds),
        "truncated_train": train_truncated,
        "truncated_val": val_truncated,
        "steps": result.global_step,
        "train_loss": _round(mean_training_loss(history, result.global_step)),
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        # The saved model is the epoch with the lowest validation loss (never chosen on test).
        "selected_on": "validation loss" if eval_losses else "last epoch",
        "best_eval_loss": _round(state.best_metric) if eval_losses else None,
        "best_step": _step_of(state.best_model_checkpoint) if eval_losses else result.global_step,
        "val_accuracy_by_epoch": val_accuracy,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    return metrics, curve
