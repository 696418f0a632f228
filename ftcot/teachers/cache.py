"""A persistent, append-only, content-addressed cache of teacher completions.

Every completion ever received is appended as one JSON line, keyed by a SHA-256 of everything
that determines it (endpoint identity, model, exact prompt, sampling parameters, sample index),
and flushed at once: a killed run loses at most the requests in flight, and a rerun asks only for
what is missing.

The cache lives outside DVC's outputs on purpose (default ``~/.cache/finetune-cot/teacher``,
or ``$FTCOT_CACHE_DIR/teacher``): DVC deletes a stage's outputs before rerunning it, and
``dvc exp run --temp`` / ``--queue`` run in other folders, but answers already paid for must
survive all of that. The teach stage's output (a DVC-tracked file) records the completions each
run used, so results never depend on the cache being present.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from ftcot.io import default_cache_dir
from ftcot.teachers.base import Completion, CompletionRequest

__all__ = ["CompletionCache", "cache_key", "default_cache_dir"]

CACHE_FILE = "completions.jsonl"
_KEY_PREFIX = '{"key":"'
_KEY_LEN = 64


def cache_key(endpoint: str, model: str, request: CompletionRequest) -> str:
    identity = {
        "endpoint": endpoint,
        "model": model,
        "prompt": request.prompt,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "sample_index": request.sample_index,
    }
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CompletionCache:
    """Append-only JSONL file plus an in-memory index of byte offsets (not of records, so memory
    stays small however many completions are stored)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CACHE_FILE
        self.path.touch(exist_ok=True)
        self._offsets: dict[str, int] = {}
        self._writer = None
        self._scan()

    def _scan(self) -> None:
        with self.path.open("rb") as f:
            offset = 0
            for line in f:
                # A line cut short by a crash has no newline or is not valid JSON: it is ignored
                # here and in get(), and the request is simply asked again.
                if line.endswith(b"}\n") and line.startswith(_KEY_PREFIX.encode()):
                    key = line[len(_KEY_PREFIX) : len(_KEY_PREFIX) + _KEY_LEN].decode("ascii", "replace")
                    self._offsets.setdefault(key, offset)
                offset += len(line)

    def __len__(self) -> int:
        return len(self._offsets)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str) -> dict | None:
        offset = self._offsets.get(key)
        if offset is None:
            return None
        with self.path.open("rb") as f:
            f.seek(offset)
            line = f.readline()
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None
        return record if record.get("key") == key else None

    def put(self, key: str, payload: dict) -> None:
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        line = f'{_KEY_PREFIX}{key}",{body[1:]}\n' if body != "{}" else f'{_KEY_PREFIX}{key}"}}\n'
        data = line.encode("utf-8")
        if self._writer is None:
            self._writer = self.path.open("a+b")  # kept open: one open() per run, not per completion
        f = self._writer
        # The lock makes the line whole when several processes (parallel stages) append.
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            end = f.seek(0, os.SEEK_END)
            if end and os.pread(f.fileno(), 1, end - 1) != b"\n":
                f.write(b"\n")  # close off a line left unfinished by a crash
                end += 1
            f.write(data)
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
        self._offsets[key] = end

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __del__(self) -> None:
        self.close()

    def get_completion(self, key: str) -> Completion | None:
        record = self.get(key)
        if record is None:
            return None
        return Completion(
            text=record["text"],
            finish_reason=record["finish_reason"],
            prompt_tokens=record["prompt_tokens"],
            completion_tokens=record["completion_tokens"],
        )

    def put_completion(
        self, key: str, endpoint: str, model: str, request: CompletionRequest, completion: Completion
    ) -> None:
        self.put(
            key,
            {
                "endpoint": endpoint,
                "model": model,
                "prompt": request.prompt,
                "temperature": request.temperature,
                "max_tokens": request.max_tokens,
                "sample_index": request.sample_index,
                "text": completion.text,
                "finish_reason": completion.finish_reason,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
            },
        )
