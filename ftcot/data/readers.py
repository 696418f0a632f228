"""Reading a task's records: rows of JSONL, JSON or CSV files or of a Hugging Face dataset, each
turned into ``{question, answer, rationale}`` by the task file's ``fields``.

Normalised as Kojima et al. (2022) and Ho et al. (2023): texts stripped, choices rendered into the
question (``... Answer choices: (A) x, (B) y``), answers in their type's canonical form (numbers
as ``canonical_number``, yes/no in lower case, a choice as its letter). A malformed file, line or
field stops with a :class:`DataError` that names the file and line, and the task file's key.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ftcot.answers import AnswerType, canonical_number, canonical_number_unit
from ftcot.data.tasks import AnswerField, ChoicesField, Fields, FileRef, TextField
from ftcot.io import DataError, read_text, text_lines

CHOICE_LETTERS = "ABCDEFGHIJ"
_MISSING = object()


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read (a line that is not JSON, a CSV row that does not fit its
    header): yielded in its place, so that one pass reports every bad row of a file."""

    message: str


def _where(path: Path | str, line: int | None = None, index: int | None = None) -> str:
    if line is not None:
        return f"{path}:{line}"
    return f"{path} (record {index})" if index is not None else str(path)


def get_path(record: object, path: str, where: str) -> object:
    """The value at ``path`` ("question.stem", "lSolutions.0") in ``record``; names what is missing."""
    value = record
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise DataError(f"{where}: missing field {path!r}")
    return value


def _read_json(path: Path) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def _json_lines(path: Path) -> Iterator[tuple[str, object]]:
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            row = BadRow(f"{path}:{lineno}: not valid JSON ({err.msg})")
        yield _where(path, lineno), row


def _json_list(path: Path, records: str | None) -> Iterator[tuple[str, object]]:
    data = _read_json(path)
    if records is not None:
        data = get_path(data, records, str(path))
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list{f' under {records!r}' if records else ''} of records")
    for i, record in enumerate(data):
        yield _where(path, index=i), record


def _csv_rows(path: Path) -> Iterator[tuple[str, object]]:
    """The rows of a CSV file as {header: value}, each named by the line it starts on. A row with
    more or fewer fields than the header is an error (a comma inside an unquoted text would
    otherwise shift every field after it), and so is a quote opened and never closed, reported at
    the line where the row that opens it starts."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        raise DataError(f"{path}:1: not readable as CSV ({err})") from None
    if len(set(header)) != len(header):
        raise DataError(f"{path}:1: the header names a column twice: {header}")
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            what = "a quote opened on this line is never closed" if "end of data" in str(err) else str(err)
            raise DataError(f"{path}:{start}: not readable as CSV ({what})") from None
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            yield (
                _where(path, start),
                BadRow(
                    f"{path}:{start}: {len(row)} fields, but the header has {len(header)} "
                    f"({', '.join(header)}): quote a text that holds a comma"
                ),
            )
            continue
        yield _where(path, start), dict(zip(header, row, strict=True))


def iter_rows(path: Path, ref: FileRef) -> Iterator[tuple[str, object]]:
    """(where, row) for every record of a file, in file order, read as they are asked for; a row
    that cannot be read comes as a :class:`BadRow` (a file that cannot be read at all stops)."""
    fmt = ref.file_format
    if fmt == "jsonl":
        return _json_lines(path)
    return _json_list(path, ref.records) if fmt == "json" else _csv_rows(path)


def format_choices(question: str, choices: list[str]) -> str:
    """``{question} Answer choices: (A) x, (B) y, ...`` (the paper's multiple-choice format)."""
    listed = ", ".join(f"({CHOICE_LETTERS[i]}) {c.strip()}" for i, c in enumerate(choices))
    return f"{question.strip()} Answer choices: {listed}"


def _text(row: object, spec: str | TextField | AnswerField, where: str, key: str) -> str:
    """The text a field spec gives for ``row`` (not yet stripped); errors name the task file's key."""
    try:
        return _text_of(row, spec, where, key)
    except DataError as err:
        if f"({key})" in str(err):
            raise
        raise DataError(f"{err} ({key})") from None


def _text_of(row: object, spec: str | TextField | AnswerField, where: str, key: str) -> str:
    if isinstance(spec, str):
        spec = TextField(field=spec)
    if spec.template is not None:
        text = re.sub(r"\{([^{}]+)\}", lambda m: str(get_path(row, m.group(1), where)).strip(), spec.template)
    else:
        value = get_path(row, spec.field, where)
        if isinstance(value, dict | list):
            raise DataError(f"{where}: field {spec.field!r} ({key}) is a {type(value).__name__}, not text")
        text = "" if value is None else str(value)
    if spec.pattern is not None:
        m = re.search(spec.pattern, text, re.DOTALL)
        if not m:
            what = f"has no {spec.expected}" if spec.expected else f"does not match {key}.pattern {spec.pattern!r}"
            raise DataError(f"{where}: field {spec.field or spec.template!r} {what}")
        text = m.group(1) if m.re.groups else m.group(0)
    if spec.remove is not None:
        text = re.sub(spec.remove, "", text)
    return text


def _scored(row: object, path: str, where: str) -> list[tuple[str, object]]:
    scores = get_path(row, path, where)
    if not isinstance(scores, dict) or sum(v == 1 for v in scores.values()) != 1:
        raise DataError(f"{where}: field {path!r} must mark exactly one choice with 1")
    return list(scores.items())


def _choices(row: object, spec: str | ChoicesField, where: str, seed: int, index: int) -> tuple[list[str], str | None]:
    """The choice texts of a record, and the answer's letter when the choices carry scores."""
    if isinstance(spec, str):
        spec = ChoicesField(field=spec)
    answer = None
    if spec.scores is not None:
        scored = _scored(row, spec.scores, where)
        if spec.shuffle:
            random.Random(f"{seed}:{index}").shuffle(scored)
        texts = [str(c) for c, _ in scored]
        answer = CHOICE_LETTERS[next(i for i, (_, v) in enumerate(scored) if v == 1)]
        return texts, answer
    if spec.texts is not None:
        texts = get_path(row, spec.texts, where)
        labels = get_path(row, spec.labels, where) if spec.labels is not None else None
        parallel = labels is None or (isinstance(labels, list) and len(labels) == len(texts))
        if not isinstance(texts, list) or not parallel:
            raise DataError(f"{where}: fields.choices: {spec.texts!r} (and its labels) must be lists of equal length")
        items = [{"text": t, "label": lab} for t, lab in zip(texts, labels or [None] * len(texts), strict=True)]
        text_path, label_path = "text", ("label" if labels is not None else None)
    else:
        items = get_path(row, spec.field, where)
        text_path, label_path = spec.text, spec.label
    if not isinstance(items, list) or not items:
        raise DataError(f"{where}: field {spec.field or spec.texts!r} has no choices")
    if label_path is not None:
        labels = [str(get_path(c, label_path, f"{where} choices")) for c in items]
        if labels != list(CHOICE_LETTERS[: len(labels)]):
            raise DataError(f"{where}: choice labels {labels} are not A, B, C, ... in order")
    texts = [str(get_path(c, text_path, f"{where} choices")) if text_path else str(c) for c in items]
    if spec.strip is not None:
        texts = [re.sub(spec.strip, "", t, count=1) for t in texts]
    if spec.shuffle:
        random.Random(f"{seed}:{index}").shuffle(texts)  # without scores the answer is a letter: kept as given
    return texts, answer


def normalize_answer(answer: str, kind: AnswerType, where: str, n_choices: int | None = None) -> str:
    """The gold answer in its type's canonical form, or a DataError naming the record."""
    text = answer.strip()
    if kind.compare == "number":
        number = canonical_number(text)
        if number is None:
            raise DataError(f"{where}: answer {answer!r} is not a number ({kind.name})")
        return number
    if kind.compare == "number_unit":
        number = canonical_number_unit(text)
        if not number:
            raise DataError(f"{where}: answer {answer!r} has no number ({kind.name})")
        return number
    if kind.labels:
        labels = kind.labels[:n_choices] if n_choices else kind.labels
        if text not in labels:
            raise DataError(f"{where}: answer {answer!r} is not one of the choice letters {', '.join(labels)}")
        return text
    if kind.name == "yes_no":
        if text.lower() not in ("yes", "no"):
            raise DataError(f"{where}: answer {answer!r} is not yes or no")
        return text.lower()
    if kind.name == "letters":
        return text.lower()
    if not text:
        raise DataError(f"{where}: the answer is empty")
    if not kind.normalize(text):
        raise DataError(
            f"{where}: answer {answer!r} is empty once read by answer type {kind.name}'s rules (e.g. articles and "
            "punctuation removed), so no prediction could ever match it: fix the answer or choose another answer type"
        )
    return text


MAX_CHARS = 100_000  # data.max_chars' default


def to_example(
    row: object, where: str, fields: Fields, kind: AnswerType, seed: int, index: int, max_chars: int = MAX_CHARS
) -> dict:
    """One record of a source as ``{question, answer, rationale}``; a text longer than ``max_chars``
    (a whole file pasted into a field, a wrong field mapping) is an error before any teacher request."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object (a record with fields), got a {type(row).__name__}")
    question = _text(row, fields.question, where, "fields.question").strip()
    if not question:
        raise DataError(f"{where}: the question (fields.question) is empty")
    n_choices = None
    answer = None
    if fields.choices is not None:
        choices, answer = _choices(row, fields.choices, where, seed, index)
        if len(choices) > len(kind.labels or ""):
            raise DataError(
                f"{where}: {len(choices)} choices, but answer type {kind.name} holds "
                f"{len(kind.labels) or 'no'} choices{f' ({kind.labels[0]}-{kind.labels[-1]})' if kind.labels else ''}"
            )
        question = format_choices(question, choices)
        n_choices = len(choices)
    if answer is None:
        spec = fields.answer
        if isinstance(spec, AnswerField) and spec.scores is not None:
            answer = next(str(k) for k, v in _scored(row, spec.scores, where) if v == 1)
        else:
            answer = _text(row, spec, where, "fields.answer")
    rationale = None
    if fields.rationale is not None:
        try:
            rationale = _text(row, fields.rationale, where, "fields.rationale").strip() or None
        except DataError:
            rationale = None  # a reference rationale is optional, record by record
    example = {"question": question, "answer": normalize_answer(answer, kind, where, n_choices), "rationale": rationale}
    for name, text in example.items():
        if text is not None and len(text) > max_chars:
            raise DataError(
                f"{where}: the {name} is {len(text):,} characters long, over data.max_chars ({max_chars:,}): "
                "check the field mapping, or raise data.max_chars"
            )
    return example
