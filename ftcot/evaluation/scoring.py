"""Scoring predictions on the test set: strict and flexible, with confidence intervals and an
optional self-consistency vote."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from scipy.stats import binomtest

from ftcot.answers import RULES_VERSION, answer_type_of, contains_answer, extract_answer, extract_flexible, is_correct
from ftcot.errors import FtcotError
from ftcot.io import rate, read_jsonl, write_json, write_jsonl
from ftcot.methods import get_method

log = logging.getLogger("ftcot")


class EvaluationError(FtcotError, ValueError):
    """Predictions and the test set do not belong together, or there is nothing to score."""


def read_test_set(path: str) -> list[dict]:
    """The test split, refused when empty (before any model is loaded)."""
    test = read_jsonl(path, required=("id", "question", "answer", "answer_type"))
    if not test:
        raise EvaluationError(f"{path}: the test set is empty")
    return test


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most common parsed answer; ties go to the one seen first; ``None`` if none parsed."""
    votes = Counter(a for a in answers if a is not None)
    return votes.most_common(1)[0][0] if votes else None


def score_predictions(
    test: Sequence[dict],
    generations: Sequence[dict],
    method: str,
    samples: Sequence[Sequence[dict]] | None = None,
) -> list[dict]:
    """One prediction record per test example, in the test set's order.

    ``prediction``/``correct``: strict (the method's format, e.g. after ``-->``);
    ``flexible_prediction``/``flexible_correct``: the last answer-like span anywhere;
    ``contains_answer``: the gold answer appears among the answer-like spans. With ``samples``
    (k sampled completions per question), ``votes`` and the majority ``vote``/``vote_correct``.
    """
    if not test:
        raise EvaluationError("the test set is empty: nothing to evaluate")
    if len(test) != len(generations):
        raise EvaluationError(f"{len(generations)} generations for {len(test)} test examples")
    if samples is not None and len(samples) != len(test):
        raise EvaluationError(f"{len(samples)} sample sets for {len(test)} test examples")
    mode = get_method(method).mode
    records = []
    for i, (ex, gen) in enumerate(zip(test, generations, strict=True)):
        gold, answer_type, text = ex["answer"], answer_type_of(ex), gen["text"]
        prediction = extract_answer(text, answer_type, mode)
        flexible = extract_flexible(text, answer_type)
        record = {
            "id": ex["id"],
            "question": ex["question"],
            "answer": gold,
            "generated": text,
            "generated_tokens": gen["generated_tokens"],
            "truncated": gen["truncated"],
            "prediction": prediction,
            "correct": is_correct(prediction, gold, answer_type),
            "flexible_prediction": flexible,
            "flexible_correct": is_correct(flexible, gold, answer_type),
            "contains_answer": contains_answer(text, gold, answer_type),
        }
        if samples is not None:
            votes = [extract_answer(s["text"], answer_type, mode) for s in samples[i]]
            record["samples"] = [s["text"] for s in samples[i]]
            record["votes"] = votes
            record["vote"] = majority_vote(votes)
            record["vote_correct"] = is_correct(record["vote"], gold, answer_type)
        records.append(record)
    return records


def accuracy_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return round(float(ci.low), 6), round(float(ci.high), 6)


def summarize_predictions(predictions: Sequence[dict], test_ids: Sequence[str] | None = None) -> dict:
    """Accuracy (strict, with its 95% interval, and flexible), parse rate, contains-answer rate,
    generated length and truncations, plus the self-consistency vote when there was one."""
    if not predictions:
        raise EvaluationError("no predictions to summarize")
    if test_ids is not None:
        check_ids(predictions, test_ids)
    n = len(predictions)
    correct = sum(p["correct"] for p in predictions)
    parsed = sum(p["prediction"] is not None for p in predictions)
    low, high = accuracy_interval(correct, n)
    summary = {
        "rules_version": RULES_VERSION,
        "n": n,
        "correct": correct,
        "accuracy": rate(correct, n),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "flexible_accuracy": rate(sum(p["flexible_correct"] for p in predictions), n),
        "contains_answer": rate(sum(p["contains_answer"] for p in predictions), n),
        "invalid": n - parsed,
        "parse_rate": rate(parsed, n),
        "truncated": sum(p["truncated"] for p in predictions),
        "mean_generated_tokens": round(sum(p["generated_tokens"] for p in predictions) / n, 3),
    }
    if all("vote" in p for p in predictions):
        vote_correct = sum(p["vote_correct"] for p in predictions)
        low, high = accuracy_interval(vote_correct, n)
        summary["self_consistency"] = {
            "samples": len(predictions[0]["votes"]),
            "accuracy": rate(vote_correct, n),
            "accuracy_ci_low": low,
            "accuracy_ci_high": high,
            "parse_rate": rate(sum(p["vote"] is not None for p in predictions), n),
        }
    return summary


def check_ids(predictions: Sequence[dict], test_ids: Sequence[str]) -> None:
    """Predictions must cover exactly the test set: one per test id, no other."""
    ids = [p["id"] for p in predictions]
    missing = sorted(set(test_ids) - set(ids))
    extra = sorted(set(ids) - set(test_ids))
    if missing or extra or len(ids) != len(test_ids):
        raise EvaluationError(
            "prediction ids do not match the test set ids: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unknown (e.g. {extra[:3]}), "
            f"{len(ids)} predictions for {len(test_ids)} test examples"
        )


def check_predictions_file(predictions: Sequence[dict], test: Sequence[dict], path: str) -> None:
    """A predictions file read back (e.g. by the report) must cover exactly the test set."""
    if not test:
        raise EvaluationError(f"{path}: the test set is empty")
    try:
        check_ids(predictions, [ex["id"] for ex in test])
    except EvaluationError as err:
        raise EvaluationError(f"{path}: {err}") from None


# From this share of completions cut at evaluate.max_new_tokens, the accuracy says more about the
# limit than about the student: the stage warns and the report flags it.
TRUNCATION_WARNING_SHARE = 0.5


def truncation_warning(metrics: dict, max_new_tokens: int) -> str | None:
    """A warning when most completions ran into ``max_new_tokens`` before their answer's end."""
    n, cut = metrics["n"], metrics["truncated"]
    if n == 0 or cut / n < TRUNCATION_WARNING_SHARE:
        return None
    return (
        f"{cut} of {n} completions reached evaluate.max_new_tokens ({max_new_tokens}) before their "
        "answer's end: the accuracy is a floor; raise evaluate.max_new_tokens"
    )


def describe_metrics(metrics: dict) -> str:
    """One line for the log."""
    line = (
        f"accuracy {metrics['accuracy']:.3f} ({metrics['correct']}/{metrics['n']}, 95% CI "
        f"{metrics['accuracy_ci_low']:.3f}-{metrics['accuracy_ci_high']:.3f}), "
        f"flexible {metrics['flexible_accuracy']:.3f}, parse rate {metrics['parse_rate']:.3f}, "
        f"truncated {metrics['truncated']}"
    )
    if "self_consistency" in metrics:
        sc = metrics["self_consistency"]
        line += (
            f"; self-consistency ({sc['samples']} samples) {sc['accuracy']:.3f}, votes parsed {sc['parse_rate']:.3f}"
        )
    return line


def score_and_write(
    test: Sequence[dict],
    generations: Sequence[dict],
    method: str,
    run: dict,
    predictions_path: str,
    metrics_path: str,
    max_new_tokens: int,
    samples: Sequence[Sequence[dict]] | None = None,
    label: str = "",
) -> dict:
    """The end of stages evaluate and prompt: the generations scored against ``test``, the
    predictions and the metrics (``run``'s fields first: what ran, how) written, the result logged
    (after ``label``) with a warning where completions hit ``max_new_tokens``. Returns the metrics."""
    predictions = score_predictions(test, generations, method, samples)
    metrics = run | summarize_predictions(predictions, [ex["id"] for ex in test])
    write_jsonl(predictions_path, predictions)
    write_json(metrics_path, metrics)
    log.info("%s%s", f"{label}: " if label else "", describe_metrics(metrics))
    if warning := truncation_warning(metrics, max_new_tokens):
        log.warning("%s", warning)
    return metrics
