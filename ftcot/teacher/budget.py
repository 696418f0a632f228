"""What a teach run will cost before it is paid for, and a budget that stops it (``teacher.max_cost_usd``).

The estimate is an upper bound over the requests the cache cannot answer: each rationale request
at its prompt's tokens plus ``teacher.max_tokens``; each answer request (whose prompt holds a
rationale not yet written) at the rationale prompt, ``max_tokens`` and the answer trigger, plus
``ANSWER_STEP_MAX_TOKENS``. Tokens are counted with the model's tokenizer where tiktoken knows the
model and has its encoding at hand, else approximated as one token per 4 characters, rounded up
(OpenAI's rule of thumb for English; the log says which was used).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ftcot.errors import FtcotError
from ftcot.teacher.base import Completion, Teacher
from ftcot.teacher.cache import CompletionCache, cache_key
from ftcot.teacher.teaching import (
    ANSWER_STEP_MAX_TOKENS,
    answer_request,
    estimate_cost,
    rationale_request,
    sampling_temperature,
)

log = logging.getLogger("ftcot")

CHARS_PER_TOKEN = 4


class BudgetError(FtcotError, RuntimeError):
    """The run would cost, or has cost, more than ``teacher.max_cost_usd``."""


def token_counter(model: str) -> tuple[Callable[[str], int], str]:
    """A function counting a text's tokens for ``model``, and how it counts (for the log)."""
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
        return (lambda text: len(encoding.encode(text))), f"tiktoken {encoding.name}"
    except Exception:  # not installed, model unknown to it, or its encoding not downloadable offline
        return (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), f"about {CHARS_PER_TOKEN} characters per token"


@dataclass(frozen=True)
class Estimate:
    requests: int  # not answered by the cache: to be sent
    cached: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None without a price for the model
    counted_by: str

    def describe(self) -> str:
        cost = "no price set (teacher.prices)" if self.cost_usd is None else f"at most {self.cost_usd:.4f} USD"
        return (
            f"{self.requests} requests to send ({self.cached} answered by the cache), at most "
            f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens "
            f"(counted as {self.counted_by}): {cost}"
        )


def estimate_teaching(
    groups: Sequence[tuple[Sequence[dict], int]],
    teacher: Teacher,
    cache: CompletionCache,
    temperature: float,
    max_tokens: int,
    price: dict | None,
) -> Estimate:
    """The upper bound on what teaching ``groups`` (records, diversity) costs now, given the cache."""
    count, counted_by = token_counter(teacher.model)
    to_send: list[tuple[int, int]] = []  # (prompt tokens, completion tokens) at most, per request
    cached = 0
    for records, diversity in groups:
        temp = sampling_temperature(diversity, temperature)
        pairs = [(r, k) for r in records for k in range(diversity)]
        step1 = [rationale_request(r, k, temp, max_tokens) for r, k in pairs]
        found = cache.get_many([cache_key(teacher.endpoint, teacher.model, q) for q in step1])
        for (record, k), request in zip(pairs, step1, strict=True):
            rationale = found.get(cache_key(teacher.endpoint, teacher.model, request))
            if rationale is None:
                to_send.append((count(request.prompt), max_tokens))
                # Its answer step holds a rationale not written yet: at most max_tokens more.
                unwritten = answer_request(record, k, "")
                to_send.append((count(unwritten.prompt) + max_tokens, ANSWER_STEP_MAX_TOKENS))
                continue
            cached += 1
            answer = answer_request(record, k, rationale.text)
            if cache.get_many([cache_key(teacher.endpoint, teacher.model, answer)]):
                cached += 1
            else:
                to_send.append((count(answer.prompt), ANSWER_STEP_MAX_TOKENS))
    prompt_tokens = sum(p for p, _ in to_send)
    completion_tokens = sum(c for _, c in to_send)
    return Estimate(
        requests=len(to_send),
        cached=cached,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=estimate_cost(prompt_tokens, completion_tokens, price),
        counted_by=counted_by,
    )


class Budget:
    """What this run has spent, from the usage each answer reports, against ``limit`` US dollars."""

    def __init__(self, limit: float, price: dict):
        self.limit = limit
        self.price = price
        self.spent = 0.0

    def spend(self, completion: Completion) -> None:
        self.spent += estimate_cost(completion.prompt_tokens, completion.completion_tokens, self.price) or 0.0

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limit

    def stop(self, unsent: int, received: int) -> BudgetError:
        return BudgetError(
            f"teacher.max_cost_usd ({self.limit} USD) reached: this run spent {self.spent:.4f} USD and stopped with "
            f"{unsent} requests unsent; the {received} answers it received are cached and will not be paid for "
            "again. Raise teacher.max_cost_usd (or set it to null) and rerun to go on."
        )


def check_estimate(estimate: Estimate, limit: float | None, model: str) -> None:
    """Stops before any request when the estimate is over the budget (or cannot be priced)."""
    if limit is None or estimate.requests == 0:
        return
    if estimate.cost_usd is None:
        raise BudgetError(
            f"teacher.max_cost_usd is {limit} USD but teacher.prices has no price for {model!r}: the run's cost "
            "cannot be estimated; set teacher.prices.<model> (US dollars per million tokens), nothing was sent"
        )
    if estimate.cost_usd > limit:
        raise BudgetError(
            f"this run's estimate is over teacher.max_cost_usd ({limit} USD): {estimate.describe()}. Nothing was "
            "sent. Raise teacher.max_cost_usd, lower diversity, data.max_train or teacher.max_tokens, or run "
            "`python stages/teach.py --task <task> --records <records> --estimate` to price other settings"
        )
