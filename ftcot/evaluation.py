"""Scoring student predictions on the test set."""

from __future__ import annotations

from collections.abc import Sequence

from ftcot.answers import RULES_VERSION, extract_answer, is_correct
from ftcot.formats import answer_mode


class EvaluationError(ValueError):
    """Predictions and the test set do not belong together, or there is nothing to score."""


def score_predictions(test: Sequence[dict], generations: Sequence[dict], variant: str) -> list[dict]:
    """One prediction record per test example: question, gold, generated text, parsed answer."""
    if not test:
        raise EvaluationError("the test set is empty: nothing to evaluate")
    if len(test) != len(generations):
        raise EvaluationError(f"{len(generations)} generations for {len(test)} test examples")
    mode = answer_mode(variant)
    records = []
    for ex, gen in zip(test, generations, strict=True):
        prediction = extract_answer(gen["text"], ex["answer_type"], mode)
        records.append(
            {
                "id": ex["id"],
                "question": ex["question"],
                "answer": ex["answer"],
                "generated": gen["text"],
                "generated_tokens": gen["generated_tokens"],
                "truncated": gen["truncated"],
                "prediction": prediction,
                "correct": is_correct(prediction, ex["answer"], ex["answer_type"]),
            }
        )
    return records


def summarize_predictions(predictions: Sequence[dict], test_ids: Sequence[str] | None = None) -> dict:
    """Accuracy and parse rate, with the counts behind them."""
    if not predictions:
        raise EvaluationError("no predictions to summarize")
    if test_ids is not None and sorted(test_ids) != sorted(p["id"] for p in predictions):
        raise EvaluationError("prediction ids do not match the test set ids")
    n = len(predictions)
    correct = sum(p["correct"] for p in predictions)
    parsed = sum(p["prediction"] is not None for p in predictions)
    return {
        "rules_version": RULES_VERSION,
        "n": n,
        "correct": correct,
        "accuracy": round(correct / n, 6),
        "invalid": n - parsed,
        "parse_rate": round(parsed / n, 6),
        "truncated": sum(p["truncated"] for p in predictions),
        "mean_generated_tokens": round(sum(p["generated_tokens"] for p in predictions) / n, 3),
    }
