"""The replay teacher: teacher outputs read from a file of recorded completions, to share them
between people and to reproduce published ones without paying again.

Format: one JSON object per line, ``{"question_id" | "question", "sample_index", "rationale",
"answer"}``, where ``answer`` is the answer step's text (e.g. ``"18"`` or ``" The answer is 18."``)
read with the task's answer rules. Lines are matched to questions by id, or else by question text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ftcot.data.sources import sha256_file
from ftcot.data.splits import normalize_question
from ftcot.io import DataError, read_jsonl
from ftcot.teacher.base import Completion, CompletionRequest, RequestFailure, ResultCallback, TeacherError


class ReplayTeacher:
    backend = "replay"

    def __init__(self, path: str | Path, records: Sequence[dict], model: str = "replay"):
        self.path = Path(path)
        if not self.path.is_file():
            raise TeacherError(f"teacher.backend is replay, but {self.path} does not exist")
        self.model = model
        self._digest = sha256_file(self.path)
        text_of = {r["id"]: r["question"] for r in records}
        asked = {normalize_question(r["question"]) for r in records}
        self._entries: dict[tuple[str, int], dict] = {}
        line_of: dict[tuple[str, int], int] = {}
        lines = 0
        try:
            entries = read_jsonl(self.path, required=("sample_index", "rationale", "answer"))
        except DataError as err:
            raise TeacherError(str(err)) from None
        for lineno, entry in enumerate(entries, 1):
            lines += 1
            where = f"{self.path}:{lineno}"
            sample = entry["sample_index"]
            if type(sample) is not int or sample < 0:
                raise TeacherError(f"{where}: sample_index must be an integer >= 0, got {json.dumps(sample)[:40]}")
            for name in ("rationale", "answer"):
                if not isinstance(entry[name], str | int | float) or isinstance(entry[name], bool):
                    raise TeacherError(f"{where}: {name} must be text, got a {type(entry[name]).__name__}")
            if "question_id" in entry:
                if entry["question_id"] not in text_of:
                    continue  # a question of another split or task: not asked here
                question = text_of[entry["question_id"]]
            elif "question" in entry:
                if not isinstance(entry["question"], str):
                    raise TeacherError(f"{where}: question must be text, got a {type(entry['question']).__name__}")
                question = entry["question"]
            else:
                raise TeacherError(f"{where}: needs 'question_id' or 'question'")
            key = (normalize_question(question), sample)
            content = (str(entry["rationale"]), str(entry["answer"]))
            if key in self._entries:
                earlier = self._entries[key]
                if (str(earlier["rationale"]), str(earlier["answer"])) != content:
                    raise TeacherError(
                        f"{where}: sample {sample} of this question is already on line {line_of[key]} with another "
                        "rationale or answer: keep one of them"
                    )
                continue  # the same line twice: harmless
            self._entries[key] = entry
            line_of[key] = lineno
        covered = {q for q, _ in self._entries} & asked
        if not covered:
            raise TeacherError(
                f"{self.path}: none of its {lines} lines is for a question of this task (matched by question_id, or "
                "by question text ignoring case and spacing): is it the file of another task?"
            )

    @property
    def endpoint(self) -> str:
        return f"replay:{self._digest}"

    def complete(self, requests: Sequence[CompletionRequest], on_result: ResultCallback) -> list[RequestFailure]:
        failures = []
        for i, request in enumerate(requests):
            meta = request.meta
            if meta is None:
                failures.append(RequestFailure(i, "a replayed request must say its question (ftcot.teacher.teaching)"))
                continue
            entry = self._entries.get((normalize_question(meta.question), request.sample_index))
            if entry is None:
                failures.append(RequestFailure(i, f"no recorded completion in {self.path}"))
                continue
            text = str(entry["answer"] if meta.step == "answer" else entry["rationale"])
            on_result(i, Completion(text=text, finish_reason="replay", prompt_tokens=0, completion_tokens=0))
        return failures
