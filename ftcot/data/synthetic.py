"""The two synthetic tasks' generators (Kojima et al., 2022): Coin Flip and Last Letter
Concatenation, four names per question from a list of common first names, seeded.

A task file selects one with ``source: {generator: coin_flip}``; ``data.num_questions`` sets how
many distinct questions are drawn.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from importlib import resources

from ftcot.data.splits import build_records, split_examples

NAMES_PER_QUESTION = 4

COIN_FLIP_TEMPLATE = 'A coin is heads up. {actions} Is the coin still heads up? Note that "flip" here means "reverse".'
LAST_LETTERS_TEMPLATE = 'Take the last letters of each words in "{names}" and concatenate them.'


def load_first_names() -> list[str]:
    text = resources.files("ftcot.data").joinpath("first_names.txt").read_text()
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


GENERATORS: dict[str, Callable[[random.Random, list[str]], tuple[str, str]]] = {
    "coin_flip": generate_coin_flip,
    "last_letter_concatenation": generate_last_letters,
}


def generate_examples(task_key: str, generator: str, n: int, seed: int) -> list[dict]:
    """``n`` distinct generated questions; duplicates are re-drawn, so none can straddle splits.
    The stream is seeded by the task's key and ``seed``."""
    draw = GENERATORS[generator]
    names = load_first_names()
    rng = random.Random(f"{task_key}:{seed}")
    examples: list[dict] = []
    seen: set[str] = set()
    while len(examples) < n:
        question, answer = draw(rng, names)
        if question not in seen:
            seen.add(question)
            examples.append({"question": question, "answer": answer, "rationale": None})
    return examples


def generate_records(task, n: int, seed: int, train_fraction: float) -> list[dict]:
    """Generated questions of a synthetic task (a ``ftcot.data.tasks.Task`` with a generator),
    split as the paper does: what the fetch stage writes for it."""
    if task.generator is None:
        raise ValueError(f"task {task.key!r} has no generator")
    split = split_examples({"all": generate_examples(task.key, task.generator, n, seed)}, seed, train_fraction)
    return build_records(task.key, task.answer_type, split, seed)[0]
