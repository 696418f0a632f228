"""Answer extraction rules, declared as data.

One rule per answer type: text filters applied before the match, a regex whose group holds the
answer, which occurrence counts, and normalisers applied to the match. The same rules filter the
teacher's rationales and score the student, so the two can never drift apart.

Three modes:
- ``teacher``: the completion of zero-shot-CoT's answer step, i.e. the text that follows
  ``Therefore, the answer ... is`` (read after the trigger if the text contains it).
- ``student``: a Fine-tune-CoT completion ``<rationale> --> <answer>``; the answer is read after
  the first ``-->`` only, so a student that did not learn the format scores as unparseable.
- ``direct``: a vanilla student's completion, which is the answer itself.
- ``cot``: a prompted chain of thought (zero- or few-shot-CoT); the answer is read after the last
  answer trigger (``Therefore, the answer ... is``), and there is none without a trigger.

Not finding an answer is a value (``None``), counted as a parse failure, never an exception.

Beside these strict rules, ``FLEXIBLE_RULES`` read the *last* answer-like span anywhere in a
completion (as lm-evaluation-harness's "flexible-extract"): a student that learned the answer
but not the ``-->`` format scores under flexible, not under strict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from ftcot.prompts import ANSWER_TRIGGERS

RULES_VERSION = 3
STUDENT_ANSWER_MARKER = "-->"

Mode = Literal["teacher", "student", "direct", "cot"]


def canonical_number(text: str) -> str | None:
    """``"18.0" -> "18"``, ``"1234.50" -> "1234.5"``, ``"-3" -> "-3"``; None if not a number."""
    try:
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if value.is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0").rstrip(".")


TEXT_FILTERS: dict[str, Callable[[str], str]] = {
    "first_line": lambda s: s.strip().split("\n", 1)[0],
    "drop_quotes_periods_spaces": lambda s: re.sub(r"[\"'.\s]", "", s),
    "drop_quotes_periods": lambda s: re.sub(r"[\"'.]", "", s),
    "drop_commas": lambda s: s.replace(",", ""),
    "lower": str.lower,
    "strip": str.strip,
    "canonical_number": lambda s: canonical_number(s) or "",
}


@dataclass(frozen=True)
class AnswerRule:
    """How to read one answer type out of text."""

    pattern: str
    """Regex searched in the filtered text; ``group`` holds the answer."""
    group: int = 1
    select: Literal["first", "last"] = "first"
    before: tuple[str, ...] = ()
    """Names of ``TEXT_FILTERS`` applied, in order, before matching."""
    after: tuple[str, ...] = ("strip",)
    """Names of ``TEXT_FILTERS`` applied to the match (and to the gold answer)."""
    flags: int = re.IGNORECASE
    tolerance: float | None = None
    """Numbers only: answers within this relative (and absolute) tolerance are equal."""


def _choice(letters: str) -> AnswerRule:
    # Capital letters only, as Kojima et al.: a lowercase "a" is an article, not a choice.
    return AnswerRule(pattern=rf"\b([{letters[0]}-{letters[-1]}])\b", flags=0)


RULES: dict[str, AnswerRule] = {
    # Kojima et al.: commas removed, the first number after the trigger (or "-->").
    "number": AnswerRule(
        pattern=r"-?\d+(?:\.\d+)?",
        group=0,
        before=("drop_commas",),
        after=("canonical_number",),
        tolerance=1e-6,
    ),
    "choice_A-E": _choice("ABCDE"),  # AQuA, CommonsenseQA
    "choice_A-F": _choice("ABCDEF"),  # Date Understanding
    "choice_A-C": _choice("ABC"),  # Tracking Shuffled Objects (three objects)
    # Kojima et al.: the first yes/no in the answer step.
    "yes_no": AnswerRule(pattern=r"\b(yes|no)\b", after=("lower",)),
    # Kojima et al.: quotes, periods and spaces removed ("y a j o." -> "yajo").
    "letters": AnswerRule(
        pattern=r"^([a-z]+)",
        before=("first_line", "drop_quotes_periods_spaces"),
        after=("lower",),
    ),
}


# Flexible scoring: the last span of the answer's shape anywhere in the text. Letters are the
# last word (quotes and periods dropped); the others are their strict pattern, taken last.
FLEXIBLE_RULES: dict[str, AnswerRule] = {
    **{name: replace(rule, select="last") for name, rule in RULES.items() if name != "letters"},
    "letters": AnswerRule(pattern=r"([a-z]+)", select="last", before=("drop_quotes_periods",), after=("lower",)),
}


def _apply(names: tuple[str, ...], text: str) -> str:
    for name in names:
        text = TEXT_FILTERS[name](text)
    return text


def get_rule(answer_type: str) -> AnswerRule:
    try:
        return RULES[answer_type]
    except KeyError:
        raise KeyError(f"unknown answer type {answer_type!r}; known: {sorted(RULES)}") from None


def extract_answer(text: str, answer_type: str, mode: Mode) -> str | None:
    """The normalised answer found in ``text``, or ``None`` when there is none."""
    rule = get_rule(answer_type)
    if mode == "student":
        if STUDENT_ANSWER_MARKER not in text:
            return None
        text = text.split(STUDENT_ANSWER_MARKER, 1)[1]
    elif mode == "teacher":
        # Read after the answer trigger if the text repeats it: "among A through E" must not
        # be taken for choice A.
        for trigger in ANSWER_TRIGGERS.values():
            if trigger in text:
                text = text.rsplit(trigger, 1)[1]
    elif mode == "cot":
        trigger = ANSWER_TRIGGERS[answer_type]
        if trigger not in text:
            return None
        text = text.rsplit(trigger, 1)[1]
    elif mode != "direct":
        raise ValueError(f"mode must be 'teacher', 'student', 'direct' or 'cot', got {mode!r}")
    matches = list(re.finditer(rule.pattern, _apply(rule.before, text), rule.flags))
    if not matches:
        return None
    match = matches[0] if rule.select == "first" else matches[-1]
    answer = _apply(rule.after, match.group(rule.group))
    return answer or None


def _matches(rule: AnswerRule, text: str) -> list[str]:
    found = (
        _apply(rule.after, m.group(rule.group))
        for m in re.finditer(rule.pattern, _apply(rule.before, text), rule.flags)
    )
    return [a for a in found if a]


def _flexible_rule(answer_type: str) -> AnswerRule:
    get_rule(answer_type)  # the same error for an unknown type
    return FLEXIBLE_RULES[answer_type]


def extract_flexible(text: str, answer_type: str) -> str | None:
    """The last answer-like span anywhere in ``text`` (``FLEXIBLE_RULES``), or ``None``."""
    found = _matches(_flexible_rule(answer_type), text)
    return found[-1] if found else None


def contains_answer(text: str, gold: str, answer_type: str) -> bool:
    """Whether any answer-like span of ``text`` equals the gold answer: the student said it
    somewhere, whether or not it ended on it."""
    return any(is_correct(a, gold, answer_type) for a in _matches(_flexible_rule(answer_type), text))


def normalize_gold(answer: str, answer_type: str) -> str:
    return _apply(get_rule(answer_type).after, answer)


def is_correct(prediction: str | None, gold: str, answer_type: str) -> bool:
    if prediction is None:
        return False
    gold = normalize_gold(gold, answer_type)
    tolerance = get_rule(answer_type).tolerance
    if tolerance is not None:
        try:
            return math.isclose(float(prediction), float(gold), rel_tol=tolerance, abs_tol=tolerance)
        except ValueError:
            return False
    return prediction == gold
