"""The paper's train/test split of a task's questions, and the records the fetch stage writes.

Records are ``{id, task, question, answer, answer_type, split, rationale}`` (``rationale``: the
dataset's own reference solution, or None), plus ``answer_options`` for a task that changes its
answer type's trigger or tolerance. Splits follow the paper: the official split where there is one
(train and test sources), a seeded sample of the train pool where the task file asks for one
(AQuA: 10,000 of train.json), otherwise ``numpy.random.RandomState(seed).permutation(N)`` with the
first ``round(train_fraction * N)`` indices (sorted) in train. Train questions that duplicate a test
question are dropped and counted.

This is the split of the dataset into train and test questions; the split of the train questions
into fine-tuning and validation sets is :mod:`ftcot.student.finetune_sets`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np


def split_indices(n: int, seed: int, train_fraction: float) -> tuple[list[int], list[int]]:
    """The paper's split: ``RandomState(seed).permutation(n)``, the first ``round(f * n)``
    indices (sorted) are train and the rest (sorted) are test."""
    perm = np.random.RandomState(seed).permutation(n)
    n_train = round(train_fraction * n)
    return sorted(int(i) for i in perm[:n_train]), sorted(int(i) for i in perm[n_train:])


def subsample(examples: list, cap: int | None, seed: int) -> list:
    """At most ``cap`` examples, a seeded sample kept in the original order."""
    if cap is None or len(examples) <= cap:
        return examples
    keep = sorted(int(i) for i in np.random.RandomState(seed).permutation(len(examples))[:cap])
    return [examples[i] for i in keep]


def normalize_question(text: str) -> str:
    """The form in which two questions count as the same (case and spacing ignored)."""
    return re.sub(r"\s+", " ", text).strip().lower()


@dataclass
class SplitExamples:
    """Raw examples of a task, split, before ids are given."""

    train: list[dict]
    test: list[dict]
    id_scheme: Literal["index", "split"]
    """'index': ids follow the position in one source; 'split': ``<task>-<split>-<i>``."""
    train_positions: list[int] = field(default_factory=list)
    test_positions: list[int] = field(default_factory=list)


def split_examples(
    examples: dict[str, list[dict]],
    seed: int,
    train_fraction: float,
    train_sample: int | None = None,
    indices: tuple[list[int], list[int]] | None = None,
) -> SplitExamples:
    """The paper's split of the examples read per role: ``all`` split by ratio (or by the given
    train and test ``indices``); ``train`` and ``test`` as they are, or with ``train_sample`` train
    questions drawn (seeded) from ``train``."""
    if "all" in examples:
        everything = examples["all"]
        if indices is not None:
            train_idx, test_idx = sorted(indices[0]), sorted(indices[1])
        else:
            train_idx, test_idx = split_indices(len(everything), seed, train_fraction)
        return SplitExamples(
            [everything[i] for i in train_idx], [everything[i] for i in test_idx], "index", train_idx, test_idx
        )
    pool, test = examples["train"], examples["test"]
    if train_sample is None:
        return SplitExamples(pool, test, "split", list(range(len(pool))), list(range(len(test))))
    chosen = sorted(int(i) for i in np.random.RandomState(seed).permutation(len(pool))[:train_sample])
    return SplitExamples([pool[i] for i in chosen], test, "split", chosen, list(range(len(test))))


def build_records(
    task_key: str,
    answer_type: str,
    split: SplitExamples,
    seed: int,
    max_train: int | None = None,
    max_test: int | None = None,
    answer_options: dict | None = None,
    drop_test_duplicates: bool = True,
) -> tuple[list[dict], dict]:
    """Records with ids and split, train duplicates of test questions dropped (unless
    ``drop_test_duplicates`` is false: the paper's exact split), caps applied.

    Returns the records (train first, then test, each in source order) and counts.
    """
    test_texts = {normalize_question(e["question"]) for e in split.test}
    duplicates = {i for i, e in enumerate(split.train) if normalize_question(e["question"]) in test_texts}
    train_keep = [i for i in range(len(split.train)) if not drop_test_duplicates or i not in duplicates]
    dropped = len(split.train) - len(train_keep)

    def ident(kind: str, position: int, width: int) -> str:
        if split.id_scheme == "index":
            return f"{task_key}-{position:0{width}d}"
        return f"{task_key}-{kind}-{position:0{width}d}"

    n_all = len(split.train) + len(split.test)
    records = []
    for kind, examples, positions, keep in (
        ("train", split.train, split.train_positions, train_keep),
        ("test", split.test, split.test_positions, list(range(len(split.test)))),
    ):
        cap = max_train if kind == "train" else max_test
        width = len(str(max(1, (n_all if split.id_scheme == "index" else max(positions, default=0) + 1) - 1)))
        for i in subsample(keep, cap, seed):
            e = examples[i]
            record = {
                "id": ident(kind, positions[i], width),
                "task": task_key,
                "question": e["question"],
                "answer": e["answer"],
                "answer_type": answer_type,
                "split": kind,
                "rationale": e.get("rationale"),
            }
            if answer_options:
                record["answer_options"] = answer_options
            records.append(record)
    counts = {
        "train_split": len(split.train),
        "test_split": len(split.test),
        "dropped_train_duplicates_of_test": dropped,
        **({} if drop_test_duplicates else {"kept_train_duplicates_of_test": len(duplicates)}),
        "train": sum(r["split"] == "train" for r in records),
        "test": sum(r["split"] == "test" for r in records),
    }
    return records, counts
