"""Readers of the paper's dataset files, normalised as Kojima et al. (2022) and Ho et al. (2023).

Each reader returns examples ``{question, answer, rationale}`` in file order: ``rationale`` is the
dataset's own reference solution where it has one (GSM8K, AQuA, StrategyQA), else None. A
malformed file, line or field stops with a :class:`DataError` that names file, line and field.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from ftcot.answers import canonical_number
from ftcot.io import DataError

CHOICE_LETTERS = "ABCDEF"
_GSM8K_CALC = re.compile(r"<<[^>]*>>")  # calculator annotations inside GSM8K solutions


def _where(path: Path, line: int | None = None, index: int | None = None) -> str:
    if line is not None:
        return f"{path}:{line}"
    return f"{path} (record {index})" if index is not None else str(path)


def _field(record: dict, name: str, where: str) -> object:
    if not isinstance(record, dict) or name not in record:
        raise DataError(f"{where}: missing field {name!r}")
    return record[name]


def _read_json(path: Path) -> object:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def _iter_json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for each non-empty line of a JSON-lines file."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield _where(path, lineno), json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None


def _iter_json_list(path: Path, key: str | None = None) -> Iterator[tuple[str, dict]]:
    data = _read_json(path)
    if key is not None:
        data = _field(data, key, str(path))
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list{f' under {key!r}' if key else ''}")
    for i, record in enumerate(data):
        yield _where(path, index=i), record


def format_choices(question: str, choices: list[str]) -> str:
    """``{question} Answer choices: (A) x, (B) y, ...`` (the paper's multiple-choice format)."""
    listed = ", ".join(f"({CHOICE_LETTERS[i]}) {c.strip()}" for i, c in enumerate(choices))
    return f"{question.strip()} Answer choices: {listed}"


def _number(value: object, where: str) -> str:
    number = canonical_number(str(value))
    if number is None:
        raise DataError(f"{where}: answer {value!r} is not a number")
    return number


def _example(question: str, answer: str, rationale: str | None = None) -> dict:
    return {"question": question.strip(), "answer": answer, "rationale": rationale}


def read_math_word_problems(path: Path) -> list[dict]:
    """SingleEq, AddSub, MultiArith: ``sQuestion`` and the first of ``lSolutions``."""
    out = []
    for where, r in _iter_json_list(path):
        solutions = _field(r, "lSolutions", where)
        if not isinstance(solutions, list) or not solutions:
            raise DataError(f"{where}: field 'lSolutions' is empty")
        out.append(_example(str(_field(r, "sQuestion", where)), _number(solutions[0], where)))
    return out


def read_svamp(path: Path) -> list[dict]:
    """SVAMP: question = Body + " " + Question."""
    out = []
    for where, r in _iter_json_list(path):
        body, question = str(_field(r, "Body", where)).strip(), str(_field(r, "Question", where)).strip()
        out.append(_example(f"{body} {question}", _number(_field(r, "Answer", where), where)))
    return out


def _gsm8k_record(r: dict, where: str) -> dict:
    solution = str(_field(r, "answer", where))
    if "####" not in solution:
        raise DataError(f"{where}: field 'answer' has no '####'")
    reasoning, answer = solution.rsplit("####", 1)
    rationale = _GSM8K_CALC.sub("", reasoning).strip()
    return _example(str(_field(r, "question", where)), _number(answer.replace(",", ""), where), rationale)


def read_gsm8k(path: Path) -> list[dict]:
    """GSM8K: the answer follows ``####`` (commas removed); the solution before it is kept."""
    return [_gsm8k_record(r, where) for where, r in _iter_json_lines(path)]


def _aqua_record(r: dict, where: str) -> dict:
    options = _field(r, "options", where)
    if not isinstance(options, list) or not options:
        raise DataError(f"{where}: field 'options' is empty")
    # Options look like "A)5(√3 + 1)": drop the "A)" label, the letters are given back in order.
    texts = [re.sub(r"^\s*[A-E]\s*\)", "", str(o), count=1) for o in options]
    answer = str(_field(r, "correct", where)).strip()
    if answer not in CHOICE_LETTERS[: len(texts)]:
        raise DataError(f"{where}: field 'correct' is {answer!r}, not one of the option letters")
    rationale = r.get("rationale")
    return _example(format_choices(str(_field(r, "question", where)), texts), answer, rationale)


def read_aqua(path: Path) -> list[dict]:
    """AQuA-RAT (JSON lines): options appended as answer choices, the rationale kept."""
    return [_aqua_record(r, where) for where, r in _iter_json_lines(path)]


def _commonsense_qa_record(r: dict, where: str) -> dict:
    q = _field(r, "question", where)
    stem = _field(q, "stem", where + " question")
    choices = _field(q, "choices", where + " question")
    labels = [str(_field(c, "label", where + " question.choices")) for c in choices]
    if labels != list(CHOICE_LETTERS[: len(labels)]):
        raise DataError(f"{where}: choice labels {labels} are not A, B, C, ... in order")
    texts = [str(_field(c, "text", where + " question.choices")) for c in choices]
    return _example(format_choices(str(stem), texts), str(_field(r, "answerKey", where)).strip())


def read_commonsense_qa(path: Path) -> list[dict]:
    return [_commonsense_qa_record(r, where) for where, r in _iter_json_lines(path)]


def read_bigbench_choice(path: Path, shuffle_seed: int | None) -> list[dict]:
    """BIG-bench multiple choice (Date Understanding, Tracking Shuffled Objects): the
    ``target_scores`` keys become answer choices, shuffled per example when a seed is given
    (Date Understanding, as Kojima et al.)."""
    out = []
    for where, r in _iter_json_list(path, key="examples"):
        scores = _field(r, "target_scores", where)
        if not isinstance(scores, dict) or sum(v == 1 for v in scores.values()) != 1:
            raise DataError(f"{where}: field 'target_scores' must mark exactly one choice with 1")
        choices = list(scores.items())
        if shuffle_seed is not None:
            random.Random(f"{shuffle_seed}:{len(out)}").shuffle(choices)
        answer = CHOICE_LETTERS[next(i for i, (_, v) in enumerate(choices) if v == 1)]
        out.append(_example(format_choices(str(_field(r, "input", where)), [c for c, _ in choices]), answer))
    return out


def read_strategy_qa(path: Path) -> list[dict]:
    """StrategyQA (BIG-bench format): yes/no from ``target_scores``; the explanation in
    ``target`` (after its leading "Yes." / "No.") is kept as the rationale."""
    out = []
    for where, r in _iter_json_list(path, key="examples"):
        scores = _field(r, "target_scores", where)
        yes = _field(scores, "Yes", where + " target_scores")
        explanation = re.sub(r"^\s*(Yes|No)\.\s*", "", str(r.get("target", ""))).strip() or None
        out.append(_example(str(_field(r, "input", where)), "yes" if yes == 1 else "no", explanation))
    return out


def read_synthetic(path: Path) -> list[dict]:
    """Kojima et al.'s 500-question Coin Flip / Last Letters files: ``{examples: [...]}``."""
    return [
        _example(str(_field(r, "question", where)), str(_field(r, "answer", where)).strip().lower())
        for where, r in _iter_json_list(path, key="examples")
    ]


def _hub_commonsense_qa_record(r: dict, where: str) -> dict:
    # tau/commonsense_qa rows: {question: str, choices: {label: [...], text: [...]}, answerKey}
    choices = _field(r, "choices", where)
    labels, texts = _field(choices, "label", where + " choices"), _field(choices, "text", where + " choices")
    as_file = {
        "answerKey": _field(r, "answerKey", where),
        "question": {
            "stem": _field(r, "question", where),
            "choices": [{"label": a, "text": b} for a, b in zip(labels, texts, strict=True)],
        },
    }
    return _commonsense_qa_record(as_file, where)


# Readers of one Hub row each (datasets.load_dataset), per task that has a Hub source.
HUB_RECORD_READERS: dict[str, Callable[[dict, str], dict]] = {
    "gsm8k": _gsm8k_record,
    "aqua": _aqua_record,
    "commonsense_qa": _hub_commonsense_qa_record,
}

READERS: dict[str, Callable[[Path], list[dict]]] = {
    "math": read_math_word_problems,
    "svamp": read_svamp,
    "gsm8k": read_gsm8k,
    "aqua": read_aqua,
    "commonsense_qa": read_commonsense_qa,
    "strategy_qa": read_strategy_qa,
    "synthetic": read_synthetic,
}
