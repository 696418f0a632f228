"""Fine-tuning the student with the transformers ``Trainer``.

Loss is on target tokens only (prompt positions are labelled -100), EOS is part of the target,
batches are padded dynamically and grouped by length, and truncations are counted.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

from ftcot.config import StudentParams
from ftcot.formats import FORMAT_VERSION, student_prompt, student_target
from ftcot.student import count_parameters, load_student, wrap_lora


class EmptyTrainingSetError(ValueError):
    """Nothing to train on (e.g. the filter kept no rationale)."""


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def tokenize_example(tokenizer, prompt: str, target: str, max_length: int) -> TokenizedExample:
    """``prompt + target + EOS`` with the prompt masked out of the loss; cut at ``max_length``."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = prompt_ids + target_ids
    labels = [-100] * len(prompt_ids) + target_ids
    truncated = len(input_ids) > max_length
    return TokenizedExample(input_ids[:max_length], labels[:max_length], truncated)


def build_dataset(examples: Sequence[dict], variant: str, tokenizer, max_length: int) -> tuple[Dataset, int]:
    """A ``datasets.Dataset`` of tokenized examples and the number that were truncated."""
    rows, truncated = [], 0
    for ex in examples:
        t = tokenize_example(
            tokenizer,
            student_prompt(ex["question"]),
            student_target(variant, ex["answer"], ex.get("rationale")),
            max_length,
        )
        truncated += t.truncated
        rows.append({"input_ids": t.input_ids, "attention_mask": [1] * len(t.input_ids), "labels": t.labels})
    return Dataset.from_list(rows), truncated


def train_student(model, tokenizer, train_ds: Dataset, val_ds: Dataset, params: StudentParams, seed: int):
    """Runs the ``Trainer``; returns its ``TrainOutput`` and log history. Checkpoints go to a
    scratch folder that is removed afterwards."""
    steps_per_epoch = max(1, -(-len(train_ds) // (params.batch_size * params.gradient_accumulation_steps)))
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    with tempfile.TemporaryDirectory(prefix="ftcot-trainer-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
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
            eval_strategy="epoch" if len(val_ds) else "no",
            save_strategy="no",
            report_to="none",
            seed=seed,
            data_seed=seed,
            bf16=bf16,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds if len(val_ds) else None,
            data_collator=collator,
        )
        return trainer.train(), trainer.state.log_history


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def finetune(
    train_examples: Sequence[dict],
    val_examples: Sequence[dict],
    variant: str,
    params: StudentParams,
    seed: int,
    output_dir: str | Path,
    task: str = "",
) -> tuple[dict, list[dict]]:
    """Trains a student and saves it (merged, for LoRA) with its tokenizer to ``output_dir``.

    Returns the training metrics and the loss curve (one row per logging step and epoch end).
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
    if params.method == "lora":
        model = wrap_lora(model, params)
    trainable, total = count_parameters(model)

    train_ds, train_truncated = build_dataset(train_examples, variant, tokenizer, params.max_length)
    val_ds, val_truncated = build_dataset(val_examples, variant, tokenizer, params.max_length)
    result, history = train_student(model, tokenizer, train_ds, val_ds, params, seed)

    if params.method == "lora":
        # Evaluation loads plain merged weights: one code path for every student.
        model = model.merge_and_unload()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    curve = [
        {"step": h["step"], "epoch": _round(h["epoch"]), **{k: _round(h[k]) for k in ("loss", "eval_loss") if k in h}}
        for h in history
        if "loss" in h or "eval_loss" in h
    ]
    eval_losses = [row["eval_loss"] for row in curve if "eval_loss" in row]
    metrics = {
        "format_version": FORMAT_VERSION,
        "method": params.method,
        "model": params.model,
        "train_examples": len(train_ds),
        "val_examples": len(val_ds),
        "truncated_train": train_truncated,
        "truncated_val": val_truncated,
        "steps": result.global_step,
        "train_loss": _round(result.training_loss),
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    return metrics, curve
