"""Where each stage's outputs are, and the cache folder outside the project, said once.

dvc.yaml spells the same paths with its own variables (``${item.task}``); tests/test_paths.py holds
the two equal. Code that reads another stage's outputs (the report, the sweep script) builds their
paths from here, never by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

FETCHED = "data/fetch/{task}.jsonl"
FETCH_METRICS = "metrics/fetch/{task}.json"
TAUGHT = "data/teach/{task}.jsonl"
TAUGHT_TEST = "data/teach/{task}.test.jsonl"
TEACH_METRICS = "metrics/teach/{task}.json"
KEPT = "data/filter/{task}.jsonl"
FILTER_METRICS = "metrics/filter/{task}.json"
FINETUNE_SET = "data/finetune_sets/{task}/{name}.jsonl"  # train_ft_cot, val_ft_cot, train_vanilla, val_vanilla, test
MODEL = "models/{task}/{variant}/seed{seed}"
# A LoRA student's adapter as peft writes it, in a subfolder of its (merged) model's folder: peft,
# vLLM and TGI load it over the base model, and transformers loading the folder sees a plain model.
ADAPTER_DIR = "adapter"
FINETUNE_METRICS = "metrics/finetune/{task}/{variant}/seed{seed}.json"
CURVES = "curves/{task}/{variant}/seed{seed}"
PREDICTIONS = "data/evaluate/{task}/{run}.jsonl"
EVAL_METRICS = "metrics/evaluate/{task}/{run}.json"
SUMMARY = "metrics/summary.json"
HEADLINE = "metrics/headline.json"  # the pipeline's one DVC metrics file
REPORT_DIR = "report"
SWEEPS = "metrics/sweeps"  # <name>.json of scripts/sweep.py

TEMPLATES = (
    FETCHED,
    FETCH_METRICS,
    TAUGHT,
    TAUGHT_TEST,
    TEACH_METRICS,
    KEPT,
    FILTER_METRICS,
    FINETUNE_SET,
    MODEL,
    FINETUNE_METRICS,
    CURVES,
    PREDICTIONS,
    EVAL_METRICS,
    SUMMARY,
    HEADLINE,
)


def evaluation_run(method: str, seed: int | None = None) -> str:
    """The name of one evaluation: ``ft_cot/seed0`` for a fine-tuned student, ``zero_shot`` for a
    prompting baseline (which has no training seed)."""
    return method if seed is None else f"{method}/seed{seed}"


def path(template: str, root: str | Path = ".", **fields: object) -> Path:
    """``template`` filled in, under ``root`` (the project's folder)."""
    return Path(root) / template.format(**fields)


def default_cache_dir() -> Path:
    """Where downloads and teacher completions persist: ``$FTCOT_CACHE_DIR`` if set, else
    ``~/.cache/finetune-cot``. Outside the repository, so DVC never deletes it."""
    root = os.environ.get("FTCOT_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "finetune-cot"


# The cache folder's parts, named once: downloads, every teacher answer, converted models.
DOWNLOADS, TEACHER_ANSWERS, CONVERTED_MODELS = "datasets", "teacher", "models"


def cache_folder(part: str) -> Path:
    """``default_cache_dir() / part``, ``part`` one of DOWNLOADS, TEACHER_ANSWERS, CONVERTED_MODELS."""
    if part not in (DOWNLOADS, TEACHER_ANSWERS, CONVERTED_MODELS):
        raise ValueError(f"no such part of the cache folder: {part!r}")
    return default_cache_dir() / part
