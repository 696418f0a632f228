"""Tasks: where each of the paper's twelve datasets comes from, its answer type, and its split.

A task produces normalised records ``{id, task, question, answer, answer_type, split, rationale}``
(``rationale``: the dataset's own reference solution, or None). Splits follow the paper: the
official split where there is one (GSM8K train/test; CommonsenseQA train/dev as train/test; AQuA
test, with train questions sampled from train.json), otherwise 70/30 with
``numpy.random.RandomState(seed).permutation(N)``.

The two synthetic tasks, Coin Flip and Last Letter Concatenation, can be generated here with a
seeded generator that follows Kojima et al. (2022) (four names per question from a list of common
first names), or read from Kojima et al.'s 500-question files.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import numpy as np

NAMES_PER_QUESTION = 4

COIN_FLIP_TEMPLATE = 'A coin is heads up. {actions} Is the coin still heads up? Note that "flip" here means "reverse".'
LAST_LETTERS_TEMPLATE = 'Take the last letters of each words in "{names}" and concatenate them.'


@dataclass(frozen=True)
class Task:
    """A task: its answer type (see ``ftcot.answers.RULES``), its files and how to split them."""

    key: str
    answer_type: str
    reader: str
    """Key of ``ftcot.loaders.READERS`` (or ``bigbench`` for BIG-bench multiple choice)."""
    split: Literal["ratio", "official", "aqua"]
    files: dict[str, str] = field(default_factory=dict)
    """Role ("all", "train", "test", "dev") -> key of ``ftcot.sources.SOURCE_FILES``."""
    generate: Callable[[random.Random], tuple[str, str]] | None = None
    """Synthetic tasks only: one (question, answer) pair from a seeded RNG."""
    hub: tuple[str, str | None, str, str] | None = None
    """Default Hub source: (path, configuration, train split, test split)."""
    shuffle_choices: bool = False


def load_first_names() -> list[str]:
    text = resources.files("ftcot.resources").joinpath("first_names.txt").read_text()
    return text.split()


def generate_coin_flip(rng: random.Random, names: list[str]) -> tuple[str, str]:
    people = rng.sample(names, NAMES_PER_QUESTION)
    flips = [rng.random() < 0.5 for _ in people]
    actions = " ".join(
        f"{p} flips the coin." if flipped else f"{p} does not flip the coin."
        for p, flipped in zip(people, flips, strict=True)
    )
    # An even number of flips leaves the coin as it started: heads up.
    answer = "yes" if sum(flips) % 2 == 0 else "no"
    return COIN_FLIP_TEMPLATE.format(actions=actions), answer


def generate_last_letters(rng: random.Random, names: list[str]) -> tuple[str, str]:
    people = rng.sample(names, NAMES_PER_QUESTION)
    answer = "".join(p[-1] for p in people).lower()
    return LAST_LETTERS_TEMPLATE.format(names=" ".join(people)), answer


def _with_names(fn: Callable[[random.Random, list[str]], tuple[str, str]]):
    names = load_first_names()
    return lambda rng: fn(rng, names)


TASKS: dict[str, Task] = {
    t.key: t
    for t in [
        Task("single_eq", "number", "math", "ratio", {"all": "single_eq"}),
        Task("addsub", "number", "math", "ratio", {"all": "addsub"}),
        Task("multiarith", "number", "math", "ratio", {"all": "multiarith"}),
        Task(
            "gsm8k",
            "number",
            "gsm8k",
            "official",
            {"train": "gsm8k/train", "test": "gsm8k/test"},
            hub=("openai/gsm8k", "main", "train", "test"),
        ),
        Task(
            "aqua",
            "choice_A-E",
            "aqua",
            "aqua",
            {"train": "aqua/train", "dev": "aqua/dev", "test": "aqua/test"},
            hub=("deepmind/aqua_rat", "raw", "train", "test"),
        ),
        Task("svamp", "number", "svamp", "ratio", {"all": "svamp"}),
        Task(
            "date_understanding", "choice_A-F", "bigbench", "ratio", {"all": "date_understanding"}, shuffle_choices=True
        ),
        Task("tracking_shuffled_objects", "choice_A-C", "bigbench", "ratio", {"all": "tracking_shuffled_objects"}),
        Task(
            "last_letter_concatenation",
            "letters",
            "synthetic",
            "ratio",
            {"all": "last_letter_concatenation"},
            generate=_with_names(generate_last_letters),
        ),
        Task(
            "coin_flip", "yes_no", "synthetic", "ratio", {"all": "coin_flip"}, generate=_with_names(generate_coin_flip)
        ),
        Task(
            "commonsense_qa",
            "choice_A-E",
            "commonsense_qa",
            "official",
            {"train": "commonsense_qa/train", "test": "commonsense_qa/test"},
            hub=("tau/commonsense_qa", None, "train", "validation"),
        ),
        Task("strategy_qa", "yes_no", "strategy_qa", "ratio", {"all": "strategy_qa"}),
    ]
}


def get_task(key: str) -> Task:
    try:
        return TASKS[key]
    except KeyError:
        raise KeyError(f"unknown task {key!r}; known tasks: {sorted(TASKS)}") from None


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


def generate_examples(task: Task, n: int, seed: int) -> list[dict]:
    """``n`` distinct generated questions; duplicates are re-drawn, so none can straddle splits."""
    if task.generate is None:
        raise ValueError(f"task {task.key!r} has no generator")
    rng = random.Random(f"{task.key}:{seed}")
    examples: list[dict] = []
    seen: set[str] = set()
    while len(examples) < n:
        question, answer = task.generate(rng)
        if question not in seen:
            seen.add(question)
            examples.append({"question": question, "answer": answer, "rationale": None})
    return examples


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
    task: Task, examples: dict[str, list[dict]], seed: int, train_fraction: float, aqua_train_size: int = 10000
) -> SplitExamples:
    """Applies the paper's split to the examples read for each file role of ``task``."""
    if task.split == "ratio":
        everything = examples["all"]
        train_idx, test_idx = split_indices(len(everything), seed, train_fraction)
        return SplitExamples(
            [everything[i] for i in train_idx], [everything[i] for i in test_idx], "index", train_idx, test_idx
        )
    if task.split == "official":
        train, test = examples["train"], examples["test"]
        return SplitExamples(train, test, "split", list(range(len(train))), list(range(len(test))))
    # AQuA: the official test set; train questions sampled (seeded) from the train source.
    pool = examples["train"]
    chosen = sorted(int(i) for i in np.random.RandomState(seed).permutation(len(pool))[:aqua_train_size])
    test = examples["test"]
    return SplitExamples([pool[i] for i in chosen], test, "split", chosen, list(range(len(test))))


def build_records(
    task: Task, split: SplitExamples, seed: int, max_train: int | None = None, max_test: int | None = None
) -> tuple[list[dict], dict]:
    """Records with ids and split, train duplicates of test questions dropped, caps applied.

    Returns the records (train first, then test, each in source order) and counts.
    """
    test_texts = {normalize_question(e["question"]) for e in split.test}
    train_keep = [i for i, e in enumerate(split.train) if normalize_question(e["question"]) not in test_texts]
    dropped = len(split.train) - len(train_keep)

    def ident(kind: str, position: int, width: int) -> str:
        if split.id_scheme == "index":
            return f"{task.key}-{position:0{width}d}"
        return f"{task.key}-{kind}-{position:0{width}d}"

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
            records.append(
                {
                    "id": ident(kind, positions[i], width),
                    "task": task.key,
                    "question": e["question"],
                    "answer": e["answer"],
                    "answer_type": task.answer_type,
                    "split": kind,
                    "rationale": e.get("rationale"),
                }
            )
    counts = {
        "train_split": len(split.train),
        "test_split": len(split.test),
        "dropped_train_duplicates_of_test": dropped,
        "train": sum(r["split"] == "train" for r in records),
        "test": sum(r["split"] == "test" for r in records),
    }
    return records, counts


def generate_records(task: Task, n: int, seed: int, train_fraction: float) -> list[dict]:
    """Generated questions of a synthetic task, split as the paper does."""
    split = split_examples(task, {"all": generate_examples(task, n, seed)}, seed, train_fraction)
    return build_records(task, split, seed)[0]
