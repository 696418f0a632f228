"""What every teacher backend takes and returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class TeacherError(RuntimeError):
    """The teacher cannot be used (missing key, unreachable endpoint) or requests failed for good."""


@dataclass(frozen=True)
class CompletionRequest:
    """One completion asked of a teacher. ``sample_index`` tells samples of the same prompt
    apart, so a server that ignores ``n`` still yields distinct, separately cached samples."""

    prompt: str
    sample_index: int
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class RequestFailure:
    """A request that got no completion within the retry budget."""

    index: int
    error: str


ResultCallback = Callable[[int, Completion], None]


class Teacher(Protocol):
    backend: str
    model: str

    @property
    def endpoint(self) -> str:
        """Identity of the server and of anything else that changes its answers; part of every
        cache key, so two servers never share answers under the same model name."""
        ...

    def complete(self, requests: Sequence[CompletionRequest], on_result: ResultCallback) -> list[RequestFailure]:
        """Completes ``requests``, calling ``on_result(index, completion)`` as each arrives;
        returns the requests that failed for good."""
        ...
