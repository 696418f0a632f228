"""Zero-shot-CoT teaching: ask a teacher for ``diversity`` rationales per question, then for
each rationale's answer, through the completion cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ftcot.answers import answer_type_of
from ftcot.redaction import redact
from ftcot.teacher.base import Completion, CompletionRequest, RequestMeta, Teacher, TeacherError
from ftcot.teacher.cache import CompletionCache, cache_key
from ftcot.teacher.prompts import PROMPT_VERSION, answer_prompt, rationale_prompt

if TYPE_CHECKING:
    from ftcot.teacher.budget import Budget

log = logging.getLogger("ftcot")

ANSWER_STEP_MAX_TOKENS = 32
# Requests sent between two looks at the budget (teacher.max_cost_usd): the most a run can
# overspend is this many answers.
BUDGET_CHUNK = 16


@dataclass
class TeachRunStats:
    """What this run cost: kept out of DVC-tracked outputs, since it depends on the cache."""

    requests_sent: int = 0  # completions this run asked for and received
    cache_hits: int = 0
    from_other_runs: int = 0  # answers another live run was already asking for: waited for, not paid twice
    damaged_cache_records: int = 0  # cached records that failed their check and were asked again
    failed: int = 0
    seconds: float = 0.0


def sampling_temperature(diversity: int, temperature: float) -> float:
    """Greedy decoding for a single rationale; sampling when several are asked for (paper)."""
    return 0.0 if diversity == 1 else temperature


# How often a run that waits for another run's answers looks for them (seconds, growing to the max).
WAIT_POLL_S = (0.2, 2.0)


def resolve(
    requests: Sequence[CompletionRequest],
    teacher: Teacher,
    cache: CompletionCache,
    stats: TeachRunStats,
    desc: str = "teacher",
    budget: Budget | None = None,
) -> tuple[list[Completion], list[str]]:
    """Completions for ``requests``, from the cache where possible, each distinct request asked once.

    New completions are stored the moment they arrive, so an interrupted run keeps everything
    already received. Before asking, the run claims the keys it will ask for; keys that another
    live run has claimed are waited for, and taken over if that run dies or gives them up.
    Requests that fail for good are listed in a :class:`TeacherError` after all others are stored.
    """
    keys = [cache_key(teacher.endpoint, teacher.model, r) for r in requests]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)  # a request asked twice in one run is paid once
    damaged_before = len(cache.damaged_seen)
    found = cache.get_many(first)
    stats.cache_hits += sum(k in found for k in keys)
    pending = [k for k in first if k not in found]
    if pending:
        _ask(pending, first, requests, teacher, cache, stats, found, desc, budget)
    stats.damaged_cache_records += len(cache.damaged_seen) - damaged_before
    return [found[k] for k in keys], keys


def _ask(
    pending: list[str],
    first: dict[str, int],
    requests: Sequence[CompletionRequest],
    teacher: Teacher,
    cache: CompletionCache,
    stats: TeachRunStats,
    found: dict[str, Completion],
    desc: str,
    budget: Budget | None = None,
) -> None:
    if cache.read_only:  # nothing could be stored: stop before any request, the preflight's included
        raise cache.read_only_error(len(pending))
    preflight = getattr(teacher, "preflight", None)
    if preflight is not None:
        preflight()
    start = time.perf_counter()
    failures: list[tuple[CompletionRequest, str]] = []
    todo = set(pending)
    told: set[str] = set()
    poll = WAIT_POLL_S[0]
    try:
        with tqdm(total=len(todo), desc=desc, unit="req") as bar:
            while todo:
                claims = cache.claim(sorted(todo))
                if claims.done:  # answered by another run since we looked
                    found.update(claims.done)
                    stats.from_other_runs += len(claims.done)
                    todo -= claims.done.keys()
                    bar.update(len(claims.done))
                if claims.mine:
                    # Under a budget, in small chunks: spending is checked between them.
                    chunk = len(claims.mine) if budget is None else BUDGET_CHUNK
                    for start_at in range(0, len(claims.mine), chunk):
                        if budget is not None and budget.exhausted:
                            raise budget.stop(len(claims.mine) - start_at + len(todo - set(claims.mine)), len(found))
                        mine = claims.mine[start_at : start_at + chunk]
                        ask = [requests[first[k]] for k in mine]

                        def store(j: int, completion: Completion, mine=mine, ask=ask) -> None:
                            key = mine[j]
                            cache.put_completion(key, teacher.endpoint, teacher.model, ask[j], completion)
                            found[key] = completion
                            stats.requests_sent += 1
                            if budget is not None:
                                budget.spend(completion)
                            bar.update(1)

                        for f in teacher.complete(ask, store):
                            failures.append((ask[f.index], f.error))
                    mine = claims.mine
                    todo -= set(mine)
                    cache.release_claims(k for k in mine if k not in found)  # a waiting run may try them
                    poll = WAIT_POLL_S[0]
                elif claims.held:
                    for owner, held in claims.held.items():
                        if owner not in told:
                            told.add(owner)
                            log.info(
                                "%s: %d answers are being asked for by another run (%s): waiting for them instead "
                                "of paying twice",
                                desc,
                                len(held),
                                cache.describe_owner(owner),
                            )
                    bar.set_postfix_str("waiting for another run")
                    time.sleep(poll)
                    poll = min(WAIT_POLL_S[1], poll * 1.5)
    finally:
        cache.release_claims()
        stats.seconds += time.perf_counter() - start
    if failures:
        stats.failed += len(failures)
        listed = "\n".join(
            f"  sample {r.sample_index} of {r.prompt[:70]!r}...: {redact(error)}" for r, error in failures[:20]
        )
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise TeacherError(
            f"{len(failures)} of {len(pending)} teacher requests failed after retries; the "
            f"{len(pending) - len(failures)} that succeeded are cached and will not be asked again:\n{listed}{more}"
        )


def rationale_request(record: dict, sample_index: int, temperature: float, max_tokens: int) -> CompletionRequest:
    """Step 1 of zero-shot-CoT for one question and sample."""
    meta = RequestMeta(record["id"], record["question"], "rationale")
    return CompletionRequest(rationale_prompt(record["question"]), sample_index, temperature, max_tokens, meta)


def answer_request(record: dict, sample_index: int, rationale: str) -> CompletionRequest:
    """Step 2: the answer given a rationale, greedy (as in Kojima et al.); each rationale its own prompt."""
    meta = RequestMeta(record["id"], record["question"], "answer", rationale)
    prompt = answer_prompt(record["question"], rationale, answer_type_of(record))
    return CompletionRequest(prompt, sample_index, 0.0, ANSWER_STEP_MAX_TOKENS, meta)


def teach(
    records: Sequence[dict],
    teacher: Teacher,
    cache: CompletionCache,
    diversity: int,
    temperature: float,
    max_tokens: int,
    stats: TeachRunStats | None = None,
    budget: Budget | None = None,
) -> tuple[list[dict], TeachRunStats]:
    """One output record per (question, sample index), sorted by question id then sample.
    ``budget`` (``ftcot.teacher.budget.Budget``): stop once this run has spent it."""
    stats = stats if stats is not None else TeachRunStats()
    temp = sampling_temperature(diversity, temperature)
    pairs = [(r, k) for r in records for k in range(diversity)]
    step1 = [rationale_request(r, k, temp, max_tokens) for r, k in pairs]
    rationales, keys1 = resolve(step1, teacher, cache, stats, desc="rationales", budget=budget)
    step2 = [answer_request(r, k, c.text) for (r, k), c in zip(pairs, rationales, strict=True)]
    answers, keys2 = resolve(step2, teacher, cache, stats, desc="answers", budget=budget)
    out = []
    for (r, k), rat, ans, key1, key2 in zip(pairs, rationales, answers, keys1, keys2, strict=True):
        out.append(
            {
                "id": f"{r['id']}-s{k}",
                "question_id": r["id"],
                "task": r["task"],
                "sample_index": k,
                "question": r["question"],
                "answer": r["answer"],
                "answer_type": r["answer_type"],
                "rationale": rat.text.strip(),
                "answer_completion": ans.text,
                "finish_reason": rat.finish_reason,
                "prompt_version": PROMPT_VERSION,
                "teacher": {"backend": teacher.backend, "model": teacher.model, "endpoint": teacher.endpoint},
                "temperature": temp,
                "usage": {
                    "prompt_tokens": rat.prompt_tokens + ans.prompt_tokens,
                    "completion_tokens": rat.completion_tokens + ans.completion_tokens,
                },
                "cache_keys": [key1, key2],
                **_answer_options(r),
            }
        )
    out.sort(key=lambda x: (x["question_id"], x["sample_index"]))
    return out, stats


def _answer_options(record: dict) -> dict:
    """A task's own trigger or tolerance travels with its records (absent for most tasks)."""
    return {"answer_options": record["answer_options"]} if record.get("answer_options") else {}


def estimate_cost(prompt_tokens: int, completion_tokens: int, price: dict | None) -> float | None:
    """US dollars at ``price`` = {prompt, completion} per million tokens; None without a price."""
    if price is None:
        return None
    return round((prompt_tokens * price["prompt"] + completion_tokens * price["completion"]) / 1e6, 6)


def summarize_usage(rationales: Sequence[dict], price: dict | None = None) -> dict:
    """Totals over the completions an output uses (deterministic, unlike run stats)."""
    prompt_tokens = sum(r["usage"]["prompt_tokens"] for r in rationales)
    completion_tokens = sum(r["usage"]["completion_tokens"] for r in rationales)
    return {
        "completions": 2 * len(rationales),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "estimated_cost_usd": estimate_cost(prompt_tokens, completion_tokens, price),
        "rationales": len(rationales),
        "questions": len({r["question_id"] for r in rationales}),
        # Recorded and counted, never fatal: the filter drops them.
        "empty_rationales": sum(not r["rationale"] for r in rationales),
        "refused": sum(r["finish_reason"] == "content_filter" for r in rationales),
        "cut_at_max_tokens": sum(r["finish_reason"] == "length" for r in rationales),
    }
