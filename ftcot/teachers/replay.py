"""The replay teacher: teacher outputs read from a file of recorded completions, to share them
between people and to reproduce published ones without paying again.

Format: one JSON object per line, ``{"question_id" | "question", "sample_index", "rationale",
"answer"}``, where ``answer`` is the answer step's text (e.g. ``"18"`` or ``" The answer is 18."``)
read with the task's answer rules. Lines are matched to questions by id, or else by question text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ftcot.io import read_jsonl
from ftcot.prompts import REASONING_TRIGGER
from ftcot.sources import sha256_file
from ftcot.tasks import normalize_question
from ftcot.teachers.base import Completion, CompletionRequest, RequestFailure, ResultCallback, TeacherError

_PROMPT_RE = re.compile(r"^Q: (.*?)\nA: " + re.escape(REASONING_TRIGGER), re.DOTALL)


class ReplayTeacher:
    backend = "replay"

    def __init__(self, path: str | Path, records: Sequence[dict], model: str = "replay"):
        self.path = Path(path)
        if not self.path.is_file():
            raise TeacherError(f"teacher.backend is replay, but {self.path} does not exist")
        self.model = model
        self._digest = sha256_file(self.path)
        text_of = {r["id"]: r["question"] for r in records}
        self._entries: dict[tuple[str, int], dict] = {}
        for lineno, entry in enumerate(read_jsonl(self.path, required=("sample_index", "rationale", "answer")), 1):
            if "question_id" in entry:
                if entry["question_id"] not in text_of:
                    continue  # a question of another split or task: not asked here
                question = text_of[entry["question_id"]]
            elif "question" in entry:
                question = entry["question"]
            else:
                raise TeacherError(f"{self.path}:{lineno}: needs 'question_id' or 'question'")
            self._entries[(normalize_question(question), int(entry["sample_index"]))] = entry

    @property
    def endpoint(self) -> str:
        return f"replay:{self._digest}"

    def complete(self, requests: Sequence[CompletionRequest], on_result: ResultCallback) -> list[RequestFailure]:
        failures = []
        for i, request in enumerate(requests):
            match = _PROMPT_RE.match(request.prompt)
            key = (normalize_question(match.group(1)), request.sample_index) if match else None
            entry = self._entries.get(key) if key else None
            if entry is None:
                failures.append(RequestFailure(i, f"no recorded completion in {self.path}"))
                continue
            answer_step = bool(request.prompt[match.end() :].strip())
            text = str(entry["answer"] if answer_step else entry["rationale"])
            on_result(i, Completion(text=text, finish_reason="replay", prompt_tokens=0, completion_tokens=0))
        return failures
