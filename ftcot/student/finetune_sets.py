"""Fine-tuning sets from the kept rationales, and the test set, with no leakage."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.model_selection import train_test_split

from ftcot.errors import FtcotError


class FinetuneSetError(FtcotError, ValueError):
    """The fine-tuning sets cannot be built from these records (too few train questions)."""


class LeakageError(FtcotError, AssertionError):
    """A test question reached a training or validation set."""


def assert_no_leakage(test: Sequence[dict], *others: Sequence[dict], same_text_allowed: bool = False) -> None:
    """Raises if any test question (by id, or by text unless ``same_text_allowed``) is in another
    set. Always on: not an ``assert`` statement, which ``python -O`` would remove."""
    test_ids = {r["question_id"] for r in test}
    test_texts = set() if same_text_allowed else {r["question"].strip().lower() for r in test}
    for other in others:
        for r in other:
            if r["question_id"] in test_ids or r["question"].strip().lower() in test_texts:
                raise LeakageError(f"test question {r['question_id']!r} is in a training set")


def _example(record: dict, rationale: str | None, source_id: str) -> dict:
    return {
        "id": source_id,
        "question_id": record["id"],
        "question": record["question"],
        "answer": record["answer"],
        "answer_type": record["answer_type"],
        "rationale": rationale,
        **({"answer_options": record["answer_options"]} if record.get("answer_options") else {}),
    }


def build_finetune_sets(
    records: Sequence[dict], kept: Sequence[dict], val_fraction: float, seed: int, same_text_allowed: bool = False
) -> dict[str, list[dict]]:
    """Returns ``train_ft_cot, val_ft_cot, train_vanilla, val_vanilla, test``.

    Train questions are split into train / validation by question (not by rationale), so the
    samples of one question never straddle the two. Fine-tune-CoT trains on the kept rationales;
    vanilla, as in the paper, on every train question with its gold answer. The question split
    does not depend on the teacher, so vanilla's sets stay byte-identical when only the teacher
    or ``diversity`` change, and DVC does not retrain it.
    """
    train_records = sorted((r for r in records if r["split"] == "train"), key=lambda r: r["id"])
    test_records = sorted((r for r in records if r["split"] == "test"), key=lambda r: r["id"])
    if len(train_records) < 2:
        raise FinetuneSetError(f"need at least 2 train questions to hold out validation, got {len(train_records)}")
    train_ids, val_ids = train_test_split(
        [r["id"] for r in train_records], test_size=val_fraction, random_state=seed, shuffle=True
    )
    train_ids, val_ids = set(train_ids), set(val_ids)
    by_id = {r["id"]: r for r in train_records}
    unknown = sorted({k["question_id"] for k in kept} - by_id.keys())
    if unknown:
        raise LeakageError(f"kept rationales for questions that are not train questions: {unknown[:5]}")

    kept_sorted = sorted(kept, key=lambda k: (k["question_id"], k["sample_index"]))
    splits = {
        "train_ft_cot": [
            _example(by_id[k["question_id"]], k["rationale"], k["id"])
            for k in kept_sorted
            if k["question_id"] in train_ids
        ],
        "val_ft_cot": [
            _example(by_id[k["question_id"]], k["rationale"], k["id"])
            for k in kept_sorted
            if k["question_id"] in val_ids
        ],
        "train_vanilla": [_example(r, None, r["id"]) for r in train_records if r["id"] in train_ids],
        "val_vanilla": [_example(r, None, r["id"]) for r in train_records if r["id"] in val_ids],
        "test": [_example(r, None, r["id"]) for r in test_records],
    }
    others = (splits[name] for name in splits if name != "test")
    assert_no_leakage(splits["test"], *others, same_text_allowed=same_text_allowed)
    return splits
