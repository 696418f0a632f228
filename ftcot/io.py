"""Deterministic JSON / JSONL reading and writing.

Outputs are written with sorted keys and a fixed layout so that the same inputs give
byte-identical files, which is what DVC's content hashes rely on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

from ftcot.errors import FtcotError


class YamlLoader(yaml.SafeLoader):
    """YAML as people write it and as DVC reads it (YAML 1.2 numbers): ``1e-3`` is a number, where
    PyYAML's YAML 1.1 rules need ``1.0e-3`` and would read ``1e-3`` as text."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> object:
    """Parses YAML text with :class:`YamlLoader` (``yaml.YAMLError`` on bad syntax)."""
    return yaml.load(text, Loader=YamlLoader)  # a SafeLoader subclass: safe


class DataError(FtcotError, ValueError):
    """An input file is missing, malformed or lacks a field; the message names file and line."""


def read_text(path: str | Path) -> str:
    """The text of a user's file, read as UTF-8 (a leading BOM, as Excel writes, is dropped). A byte
    that is not UTF-8 is an error naming the file, its line and the byte's offset; a missing file or
    a folder is an error naming the path: never a traceback."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a file") from None
    except PermissionError:
        raise DataError(f"{path}: not readable (permission denied)") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data[:offset].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[offset]:02x} at byte offset {offset}); save the file as UTF-8"
        ) from None


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a user's text file, checked as :func:`read_text` checks it."""
    # "\n" only: str.splitlines would also cut at U+2028 and the like, which JSON strings may hold.
    yield from enumerate(read_text(path).split("\n"), start=1)


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
    for lineno, line in text_lines(path):
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


def rate(count: int, total: int) -> float:
    """``count / total`` as the metrics files write shares: six decimals, and 0.0 of nothing."""
    return round(count / total, 6) if total else 0.0


def read_json(path: str | Path) -> object:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
