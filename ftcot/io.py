"""Deterministic JSON / JSONL reading and writing.

Outputs are written with sorted keys and a fixed layout so that the same inputs give
byte-identical files, which is what DVC's content hashes rely on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ftcot.errors import FtcotError


def default_cache_dir() -> Path:
    """Where downloads and teacher completions persist: ``$FTCOT_CACHE_DIR`` if set, else
    ``~/.cache/finetune-cot``. Outside the repository, so DVC never deletes it."""
    root = os.environ.get("FTCOT_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "finetune-cot"


class DataError(FtcotError, ValueError):
    """An input file is missing, malformed or lacks a field; the message names file and line."""


def dumps_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Writes one JSON object per line; returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(dumps_line(record) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path, required: Iterable[str] = ()) -> Iterator[dict]:
    """Yields the records of a JSONL file; a bad line or a missing field names file and line."""
    path = Path(path)
    required = tuple(required)
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            missing = [k for k in required if k not in record]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}")
            yield record


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required))


def write_json(path: str | Path, obj: object) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True, indent=2, ensure_ascii=False)
        f.write("\n")


def read_json(path: str | Path) -> object:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
