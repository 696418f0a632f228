"""What every teacher backend takes and returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ftcot.errors import FtcotError


class TeacherError(FtcotError, RuntimeError):
    """The teacher cannot be used (missing key, unreachable endpoint) or requests failed for good."""


@dataclass(frozen=True)
class RequestMeta:
    """What a request is for, beside its prompt: backends that answer from data (the oracle, a
    replay file) read it instead of parsing prompts. Not part of the cache key."""

    question_id: str
    question: str
    step: Literal["rationale", "answer"]
    rationale: str | None = None
    """The answer step's rationale (the text the answer is asked for)."""


@dataclass(frozen=True)
class CompletionRequest:
    """One completion asked of a teacher. ``sample_index`` tells samples of the same prompt
    apart, so a server that ignores ``n`` still yields distinct, separately cached samples."""

    prompt: str
    sample_index: int
    temperature: float
    max_tokens: int
    meta: RequestMeta | None = field(default=None, compare=False)


class UnreadableResponse(ValueError):
    """A response, or a cached record, that is not a completion of the expected shape: never stored,
    asked again within the retry budget."""


@dataclass(frozen=True)
class Completion:
    """One completion. Constructing it checks the types, so a value of another shape (a list of
    content parts, an object, a token count that is a string) never reaches the cache."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise UnreadableResponse(f"the completion's text is a {type(self.text).__name__}, not a string")
        if not isinstance(self.finish_reason, str):
            raise UnreadableResponse(f"finish_reason is a {type(self.finish_reason).__name__}, not a string")
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:  # bool is an int subclass: excluded on purpose
                raise UnreadableResponse(f"{name} is {type(value).__name__} {str(value)[:20]!r}, not a count")


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
