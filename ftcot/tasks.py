"""Tasks: where each dataset's questions come from, their answer type, and the paper's split.

A task produces normalised records ``{id, task, question, answer, answer_type, split}``.
The two synthetic tasks of the paper, Coin Flip and Last Letter Concatenation, are generated
here with a seeded generator that follows Kojima et al. (2022): four names per question drawn
from a list of common first names.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

NAMES_PER_QUESTION = 4

COIN_FLIP_TEMPLATE = 'A coin is heads up. {actions} Is the coin still heads up? Note that "flip" here means "reverse".'
LAST_LETTERS_TEMPLATE = 'Take the last letters of each words in "{names}" and concatenate them.'


@dataclass(frozen=True)
class Task:
    """A task key, its answer type (see ``ftcot.answers.RULES``) and how to build it."""

    key: str
    answer_type: str
    generate: Callable[[int, random.Random], tuple[str, str]]
    """Makes one (question, answer) pair from its index and a seeded RNG."""


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
    return lambda _index, rng: fn(rng, names)


TASKS: dict[str, Task] = {
    "coin_flip": Task("coin_flip", "yes_no", _with_names(generate_coin_flip)),
    "last_letter_concatenation": Task("last_letter_concatenation", "letters", _with_names(generate_last_letters)),
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


def generate_records(task: Task, n: int, seed: int, train_fraction: float) -> list[dict]:
    """Generates ``n`` distinct questions and splits them as the paper does.

    Duplicate questions are re-drawn, so no test question can also appear in train.
    """
    rng = random.Random(f"{task.key}:{seed}")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(pairs) < n:
        question, answer = task.generate(len(pairs), rng)
        if question not in seen:
            seen.add(question)
            pairs.append((question, answer))
    train, _test = split_indices(n, seed, train_fraction)
    train_set = set(train)
    width = len(str(n - 1))
    return [
        {
            "id": f"{task.key}-{i:0{width}d}",
            "task": task.key,
            "question": question,
            "answer": answer,
            "answer_type": task.answer_type,
            "split": "train" if i in train_set else "test",
        }
        for i, (question, answer) in enumerate(pairs)
    ]
