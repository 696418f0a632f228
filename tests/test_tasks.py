import re

import numpy as np
import pytest

from ftcot.answers import ANSWER_TYPES
from ftcot.data.splits import split_indices
from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import TASKS, get_task


def test_split_follows_the_paper():
    train, test = split_indices(10, seed=0, train_fraction=0.7)
    perm = np.random.RandomState(0).permutation(10)
    assert train == sorted(perm[:7].tolist())
    assert test == sorted(perm[7:].tolist())


GENERATED = ["coin_flip", "last_letter_concatenation"]


@pytest.mark.parametrize("key", GENERATED)
def test_generated_sizes_and_determinism(key):
    records = generate_records(get_task(key), 500, seed=0, train_fraction=0.7)
    assert sum(r["split"] == "train" for r in records) == 350
    assert sum(r["split"] == "test" for r in records) == 150
    assert len({r["question"] for r in records}) == 500  # duplicates are re-drawn
    assert records == generate_records(get_task(key), 500, seed=0, train_fraction=0.7)
    assert records != generate_records(get_task(key), 500, seed=1, train_fraction=0.7)
    assert {r["answer_type"] for r in records} == {TASKS[key].answer_type}


def test_coin_flip_answer_is_parity_of_flips():
    for r in generate_records(get_task("coin_flip"), 200, seed=3, train_fraction=0.7):
        assert r["question"].startswith("A coin is heads up. ")
        assert r["question"].endswith('Is the coin still heads up? Note that "flip" here means "reverse".')
        flips = len(re.findall(r"\w+ flips the coin\.", r["question"]))
        keeps = len(re.findall(r"\w+ does not flip the coin\.", r["question"]))
        assert flips + keeps == 4
        assert r["answer"] == ("yes" if flips % 2 == 0 else "no")


def test_last_letters_answer():
    for r in generate_records(get_task("last_letter_concatenation"), 200, seed=3, train_fraction=0.7):
        names = re.search(r'words in "([^"]+)" and concatenate', r["question"]).group(1).split()
        assert len(names) == 4
        assert r["answer"] == "".join(n[-1] for n in names).lower()


def test_twelve_tasks_with_their_answer_types():
    assert {k: t.answer_type for k, t in TASKS.items()} == {
        "single_eq": "number",
        "addsub": "number",
        "multiarith": "number",
        "gsm8k": "number",
        "aqua": "choice_A-E",
        "svamp": "number",
        "date_understanding": "choice_A-F",
        "tracking_shuffled_objects": "choice_A-C",
        "last_letter_concatenation": "letters",
        "coin_flip": "yes_no",
        "commonsense_qa": "choice_A-E",
        "strategy_qa": "yes_no",
    }
    assert all(t.answer_type in ANSWER_TYPES for t in TASKS.values())


def test_generated_ids_and_order():
    records = generate_records(get_task("coin_flip"), 20, seed=0, train_fraction=0.7)
    assert [r["split"] for r in records] == ["train"] * 14 + ["test"] * 6
    assert all(r["id"].startswith("coin_flip-") and len(r["id"]) == len("coin_flip-00") for r in records)
    assert all(r["rationale"] is None for r in records)


def test_unknown_task_lists_known():
    with pytest.raises(KeyError, match="known tasks"):
        get_task("nope")
