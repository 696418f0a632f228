"""Answer types, declared as data: one entry per type holds everything the pipeline knows of it.

An :class:`AnswerType` has its strict rule (how the teacher's answer step and the student's
completion are read), its flexible rule (the last answer-like span anywhere, as
lm-evaluation-harness's "flexible-extract"), the zero-shot-CoT answer trigger that asks for it
(Kojima et al.), how a prediction is compared with the gold answer, and the accuracy of a uniform
guess (the report's "Random" row). The same rules filter the teacher's rationales and score the
student, so the two can never drift apart.

A rule is text filters applied before the match, a regex whose group holds the answer, which
occurrence counts, and normalisers applied to the match (and to the gold answer).

Four modes of reading a completion:
- ``teacher``: the completion of zero-shot-CoT's answer step, i.e. the text that follows
  ``Therefore, the answer ... is`` (read after the trigger if the text contains it).
- ``student``: a Fine-tune-CoT completion ``<rationale> --> <answer>``; the answer is read after
  the first ``-->`` only, so a student that did not learn the format scores as unparseable.
- ``direct``: a vanilla student's completion, which is the answer itself.
- ``cot``: a prompted chain of thought (zero- or few-shot-CoT); the answer is read after the last
  answer trigger, and there is none without a trigger.

Not finding an answer is a value (``None``), counted as a parse failure, never an exception.

A task file may adjust its type (``trigger``, ``tolerance``): the records of such a task carry
``answer_options``, and :func:`answer_type_of` gives the adjusted type.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ftcot.errors import FtcotError

RULES_VERSION = 4
STUDENT_ANSWER_MARKER = "-->"

Mode = Literal["teacher", "student", "direct", "cot"]


class UnknownAnswerType(FtcotError, KeyError):
    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


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


_NUMBER_UNIT = re.compile(r"(-?\d+(?:\.\d+)?)\s*([^\W\d_][\w/%°]*|%|°\w*)?")


def canonical_number_unit(text: str) -> str:
    """``"3.50 Kilograms."`` -> ``"3.5 kilogram"``: the first number, then its unit (lower case,
    a plural "s" dropped); ``""`` without a number."""
    m = _NUMBER_UNIT.search(text.replace(",", ""))
    if not m:
        return ""
    number = canonical_number(m.group(1)) or ""
    unit = (m.group(2) or "").lower().rstrip(".")
    if len(unit) > 3 and unit.endswith("s"):
        unit = unit[:-1]
    return f"{number} {unit}".strip()


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and articles removed, spaces collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


TEXT_FILTERS: dict[str, Callable[[str], str]] = {
    "first_line": lambda s: s.strip().split("\n", 1)[0],
    "drop_quotes_periods_spaces": lambda s: re.sub(r"[\"'.\s]", "", s),
    "drop_quotes_periods": lambda s: re.sub(r"[\"'.]", "", s),
    "drop_commas": lambda s: s.replace(",", ""),
    "lower": str.lower,
    "strip": str.strip,
    "canonical_number": lambda s: canonical_number(s) or "",
    "canonical_number_unit": canonical_number_unit,
    "squad_normalize": squad_normalize,
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


@dataclass(frozen=True)
class AnswerType:
    """Everything about one kind of answer."""

    name: str
    description: str
    strict: AnswerRule
    flexible: AnswerRule
    trigger: str
    """Zero-shot-CoT's answer trigger, the end of the answer step's prompt."""
    chance: float
    """Accuracy of a uniform guess (0 for open answers)."""
    compare: Literal["exact", "number", "number_unit"] = "exact"
    tolerance: float | None = None
    """Numbers: answers within this relative (and absolute) tolerance are equal."""
    labels: str = ""
    """Choice letters the type can hold (choices only)."""

    def normalize(self, answer: str) -> str:
        """The gold answer as the rules would read it."""
        return _apply(self.strict.after, answer)


def _choice_type(last: str) -> AnswerType:
    labels = "ABCDEFGHIJ"[: "ABCDEFGHIJ".index(last) + 1]
    # Capital letters only, as Kojima et al.: a lowercase "a" is an article, not a choice.
    rule = AnswerRule(pattern=rf"\b([A-{last}])\b", flags=0)
    return AnswerType(
        name=f"choice_A-{last}",
        description=f"one of {len(labels)} choices, A to {last} (the choices are listed in the question)",
        strict=rule,
        flexible=replace(rule, select="last"),
        trigger=f"Therefore, among A through {last}, the answer is",
        chance=1 / len(labels),
        labels=labels,
    )


_NUMBER = AnswerRule(pattern=r"-?\d+(?:\.\d+)?", group=0, before=("drop_commas",), after=("canonical_number",))
_NUMBER_UNIT_RULE = AnswerRule(
    pattern=_NUMBER_UNIT.pattern, group=0, before=("drop_commas",), after=("canonical_number_unit",)
)
_YES_NO = AnswerRule(pattern=r"\b(yes|no)\b", after=("lower",))
_TEXT = AnswerRule(pattern=r"^(.*\S.*)$", before=("first_line",), after=("squad_normalize",))

ANSWER_TYPES: dict[str, AnswerType] = {
    t.name: t
    for t in [
        # Kojima et al.: commas removed, the first number after the trigger (or "-->").
        AnswerType(
            "number",
            "a number; equal within a relative and absolute tolerance of 1e-6",
            _NUMBER,
            replace(_NUMBER, select="last"),
            "Therefore, the answer (arabic numerals) is",
            0.0,
            compare="number",
            tolerance=1e-6,
        ),
        AnswerType(
            "number_unit",
            "a number with an optional unit ('3.5 kg'): the numbers must agree within the tolerance and, "
            "when the answer names a unit, so must the units (lower case, a plural 's' ignored)",
            _NUMBER_UNIT_RULE,
            replace(_NUMBER_UNIT_RULE, select="last"),
            "Therefore, the answer (arabic numerals, with its unit) is",
            0.0,
            compare="number_unit",
            tolerance=1e-6,
        ),
        # The paper's choice tasks: AQuA and CommonsenseQA (A-E), Date Understanding (A-F),
        # Tracking Shuffled Objects (A-C); the others for a project's own tasks.
        *(_choice_type(last) for last in "BCDEFGHIJ"),
        # Kojima et al.: the first yes/no in the answer step.
        AnswerType(
            "yes_no",
            "yes or no",
            _YES_NO,
            replace(_YES_NO, select="last"),
            "Therefore, the answer (Yes or No) is",
            0.5,
        ),
        # Kojima et al.: quotes, periods and spaces removed ("y a j o." -> "yajo"); flexibly, the
        # last word (quotes and periods dropped).
        AnswerType(
            "letters",
            "a string of letters (Last Letter Concatenation)",
            AnswerRule(pattern=r"^([a-z]+)", before=("first_line", "drop_quotes_periods_spaces"), after=("lower",)),
            AnswerRule(pattern=r"([a-z]+)", select="last", before=("drop_quotes_periods",), after=("lower",)),
            "Therefore, the answer is",
            0.0,
        ),
        # SQuAD-style short answers: the first line of the answer, normalised, must equal the gold one.
        AnswerType(
            "text",
            "a short free-form answer, scored by normalised exact match (SQuAD: case, punctuation and "
            "articles ignored); flexibly, the last line",
            _TEXT,
            AnswerRule(pattern=r"^(.*\S.*)$", select="last", flags=re.MULTILINE, after=("squad_normalize",)),
            "Therefore, the answer is",
            0.0,
        ),
    ]
}

# What a task file may change of its answer type.
ANSWER_OPTIONS = ("trigger", "tolerance")


def get_answer_type(answer_type: str | AnswerType, options: Mapping[str, object] | None = None) -> AnswerType:
    """The type named ``answer_type``, adjusted by a task's ``options`` (``trigger``, ``tolerance``)."""
    if isinstance(answer_type, AnswerType):
        found = answer_type
    else:
        try:
            found = ANSWER_TYPES[answer_type]
        except KeyError:
            raise UnknownAnswerType(f"unknown answer type {answer_type!r}; known: {sorted(ANSWER_TYPES)}") from None
    if options:
        found = replace(found, **{k: v for k, v in options.items() if k in ANSWER_OPTIONS})
    return found


def answer_type_of(record: Mapping) -> AnswerType:
    """The answer type of a record (``answer_type``, adjusted by its task's ``answer_options``)."""
    return get_answer_type(record["answer_type"], record.get("answer_options"))


def _apply(names: tuple[str, ...], text: str) -> str:
    for name in names:
        text = TEXT_FILTERS[name](text)
    return text


def extract_answer(text: str, answer_type: str | AnswerType, mode: Mode) -> str | None:
    """The normalised answer found in ``text``, or ``None`` when there is none."""
    kind = get_answer_type(answer_type)
    rule = kind.strict
    if mode == "student":
        if STUDENT_ANSWER_MARKER not in text:
            return None
        text = text.split(STUDENT_ANSWER_MARKER, 1)[1]
    elif mode == "teacher":
        # Read after an answer trigger if the text repeats one: "among A through E" must not be
        # taken for choice A.
        for trigger in dict.fromkeys([*(t.trigger for t in ANSWER_TYPES.values()), kind.trigger]):
            if trigger in text:
                text = text.rsplit(trigger, 1)[1]
    elif mode == "cot":
        if kind.trigger not in text:
            return None
        text = text.rsplit(kind.trigger, 1)[1]
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


def extract_flexible(text: str, answer_type: str | AnswerType) -> str | None:
    """The last answer-like span anywhere in ``text`` (the type's flexible rule), or ``None``."""
    found = _matches(get_answer_type(answer_type).flexible, text)
    return found[-1] if found else None


def contains_answer(text: str, gold: str, answer_type: str | AnswerType) -> bool:
    """Whether any answer-like span of ``text`` equals the gold answer: the student said it
    somewhere, whether or not it ended on it."""
    kind = get_answer_type(answer_type)
    return any(is_correct(a, gold, kind) for a in _matches(kind.flexible, text))


def normalize_gold(answer: str, answer_type: str | AnswerType) -> str:
    return get_answer_type(answer_type).normalize(answer)


def _close(a: str, b: str, tolerance: float) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=tolerance, abs_tol=tolerance)
    except ValueError:
        return False


def is_correct(prediction: str | None, gold: str, answer_type: str | AnswerType) -> bool:
    if prediction is None:
        return False
    kind = get_answer_type(answer_type)
    gold = kind.normalize(gold)
    if kind.compare == "number":
        return _close(prediction, gold, kind.tolerance or 0.0)
    if kind.compare == "number_unit":
        (number, _, unit), (gold_number, _, gold_unit) = prediction.partition(" "), gold.partition(" ")
        return _close(number, gold_number, kind.tolerance or 0.0) and (not unit or not gold_unit or unit == gold_unit)
    return prediction == gold
