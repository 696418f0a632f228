"""Zero-shot-CoT teaching: ask a teacher for ``diversity`` rationales per question, then for
each rationale's answer, through the completion cache."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ftcot.prompts import PROMPT_VERSION, answer_prompt, rationale_prompt
from ftcot.teachers.base import Completion, CompletionRequest, Teacher, TeacherError
from ftcot.teachers.cache import CompletionCache, cache_key

ANSWER_STEP_MAX_TOKENS = 32


@dataclass
class TeachRunStats:
    """What this run cost: kept out of DVC-tracked outputs, since it depends on the cache."""

    requests_sent: int = 0
    cache_hits: int = 0
    failed: int = 0
    seconds: float = 0.0


def sampling_temperature(diversity: int, temperature: float) -> float:
    """Greedy decoding for a single rationale; sampling when several are asked for (paper)."""
    return 0.0 if diversity == 1 else temperature


def resolve(
    requests: Sequence[CompletionRequest],
    teacher: Teacher,
    cache: CompletionCache,
    stats: TeachRunStats,
    desc: str = "teacher",
) -> tuple[list[Completion], list[str]]:
    """Completions for ``requests``, from the cache where possible. New completions are stored
    the moment they arrive, so an interrupted run keeps everything already received; requests
    that fail for good are listed in a :class:`TeacherError` after all others are stored."""
    keys = [cache_key(teacher.endpoint, teacher.model, r) for r in requests]
    results: list[Completion | None] = [cache.get_completion(k) for k in keys]
    missing = [i for i, c in enumerate(results) if c is None]
    stats.cache_hits += len(requests) - len(missing)
    if not missing:
        return [c for c in results if c is not None], keys
    preflight = getattr(teacher, "preflight", None)
    if preflight is not None:
        preflight()
    todo = [requests[i] for i in missing]
    start = time.perf_counter()
    with tqdm(total=len(todo), desc=desc, unit="req") as bar:

        def store(j: int, completion: Completion) -> None:
            i = missing[j]
            cache.put_completion(keys[i], teacher.endpoint, teacher.model, requests[i], completion)
            results[i] = completion
            stats.requests_sent += 1
            bar.update(1)

        failures = teacher.complete(todo, store)
    stats.seconds += time.perf_counter() - start
    if failures:
        stats.failed += len(failures)
        listed = "\n".join(
            f"  sample {todo[f.index].sample_index} of {todo[f.index].prompt[:70]!r}...: {f.error}"
            for f in failures[:20]
        )
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise TeacherError(
            f"{len(failures)} of {len(todo)} teacher requests failed after retries; the "
            f"{len(todo) - len(failures)} that succeeded are cached and will not be asked again:\n{listed}{more}"
        )
    return [c for c in results if c is not None], keys


def teach(
    records: Sequence[dict],
    teacher: Teacher,
    cache: CompletionCache,
    diversity: int,
    temperature: float,
    max_tokens: int,
    stats: TeachRunStats | None = None,
) -> tuple[list[dict], TeachRunStats]:
    """One output record per (question, sample index), sorted by question id then sample."""
    stats = stats if stats is not None else TeachRunStats()
    temp = sampling_temperature(diversity, temperature)
    pairs = [(r, k) for r in records for k in range(diversity)]
    step1 = [CompletionRequest(rationale_prompt(r["question"]), k, temp, max_tokens) for r, k in pairs]
    rationales, keys1 = resolve(step1, teacher, cache, stats, desc="rationales")
    # The answer step is greedy, as in Kojima et al.; each rationale has its own prompt.
    step2 = [
        CompletionRequest(answer_prompt(r["question"], c.text, r["answer_type"]), k, 0.0, ANSWER_STEP_MAX_TOKENS)
        for (r, k), c in zip(pairs, rationales, strict=True)
    ]
    answers, keys2 = resolve(step2, teacher, cache, stats, desc="answers")
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
            }
        )
    out.sort(key=lambda x: (x["question_id"], x["sample_index"]))
    return out, stats


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
