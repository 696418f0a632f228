"""Teachers for tests: the oracle that counts what reaches it, and one that echoes its prompts."""

from __future__ import annotations

from ftcot.teacher.base import Completion, CompletionRequest
from ftcot.teacher.oracle import OracleTeacher


class CountingTeacher(OracleTeacher):
    """The oracle, counting the requests that reach it."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent: list[CompletionRequest] = []

    def complete(self, requests, on_result):
        self.sent.extend(requests)
        return super().complete(requests, on_result)


class EchoTeacher:
    """Answers any request with the first line of its prompt, as endpoint "e" and model "m"."""

    backend, model, endpoint = "echo", "m", "e"

    def __init__(self):
        self.sent: list[CompletionRequest] = []

    def complete(self, requests, on_result):
        self.sent.extend(requests)
        for i, r in enumerate(requests):
            on_result(i, Completion(f"fresh {r.prompt.splitlines()[0]}", "stop", 1, 1))
        return []
