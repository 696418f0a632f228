"""Keep the rationales whose final answer is right (the paper's filter)."""

from __future__ import annotations

from collections.abc import Sequence

from ftcot.answers import RULES_VERSION, answer_type_of, extract_answer, is_correct
from ftcot.io import rate


def judge_rationales(rationales: Sequence[dict]) -> list[dict]:
    """Each rationale with the teacher's parsed ``prediction`` and whether it is ``correct``."""
    judged = []
    for r in rationales:
        kind = answer_type_of(r)
        prediction = extract_answer(r["answer_completion"], kind, mode="teacher")
        judged.append({**r, "prediction": prediction, "correct": is_correct(prediction, r["answer"], kind)})
    return judged


def filter_rationales(rationales: Sequence[dict], keep: str = "correct") -> tuple[list[dict], dict]:
    """The kept rationales and the filter's metrics. ``keep``: ``correct`` (the paper: those whose
    final answer is right) or ``all`` (the ablation without filtering: every rationale that is not
    empty, right or wrong)."""
    if keep not in ("correct", "all"):
        raise ValueError(f"keep must be 'correct' or 'all', got {keep!r}")
    judged = judge_rationales(rationales)
    kept = [r for r in judged if (r["correct"] if keep == "correct" else bool(r["rationale"].strip()))]
    questions = {r["question_id"] for r in judged}
    first = [r for r in judged if r["sample_index"] == 0]
    parsed = sum(r["prediction"] is not None for r in judged)
    metrics = {
        "rules_version": RULES_VERSION,
        **({} if keep == "correct" else {"keep": keep, "kept_wrong": sum(not r["correct"] for r in kept)}),
        "questions": len(questions),
        "rationales": len(judged),
        "kept": len(kept),
        "kept_rate": rate(len(kept), len(judged)),
        "invalid": len(judged) - parsed,
        "parse_rate": rate(parsed, len(judged)),
        "questions_covered": len({r["question_id"] for r in kept}),
        "question_coverage": rate(len({r["question_id"] for r in kept}), len(questions)),
        # Accuracy of sample 0 on the train questions: the teacher's own accuracy.
        "teacher_accuracy": rate(sum(r["correct"] for r in first), len(first)),
    }
    return kept, metrics
