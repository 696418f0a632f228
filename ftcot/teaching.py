"""Zero-shot-CoT teaching: ask a teacher for ``diversity`` rationales per question, then for
each rationale's answer, through the completion cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ftcot.prompts import PROMPT_VERSION, answer_prompt, rationale_prompt
from ftcot.teachers.base import Completion, CompletionRequest, Teacher
from ftcot.teachers.cache import CompletionCache, cache_key

ANSWER_STEP_MAX_TOKENS = 32


@dataclass
class TeachRunStats:
    """What this run cost: not part of any output, since it depends on the cache's state."""

    requests_sent: int = 0
    cache_hits: int = 0


def sampling_temperature(diversity: int, temperature: float) -> float:
    """Greedy decoding for a single rationale; sampling when several are asked for (paper)."""
    return 0.0 if diversity == 1 else temperature


def resolve(
    requests: Sequence[CompletionRequest],
    teacher: Teacher,
    cache: CompletionCache,
    stats: TeachRunStats,
    desc: str = "teacher",
    chunk_size: int = 64,
) -> tuple[list[Completion], list[str]]:
    """Completions for ``requests``, from the cache where possible; new ones are stored as they
    arrive, chunk by chunk, so an interrupted run keeps everything already received."""
    keys = [cache_key(teacher.endpoint, teacher.model, r) for r in requests]
    results: list[Completion | None] = [cache.get_completion(k) for k in keys]
    missing = [i for i, c in enumerate(results) if c is None]
    stats.cache_hits += len(requests) - len(missing)
    with tqdm(total=len(missing), desc=desc, unit="req", disable=not missing) as bar:
        for start in range(0, len(missing), chunk_size):
            chunk = missing[start : start + chunk_size]
            completions = teacher.complete([requests[i] for i in chunk])
            for i, completion in zip(chunk, completions, strict=True):
                cache.put_completion(keys[i], teacher.endpoint, teacher.model, requests[i], completion)
                results[i] = completion
            stats.requests_sent += len(chunk)
            bar.update(len(chunk))
    return [c for c in results if c is not None], keys


def teach(
    records: Sequence[dict],
    teacher: Teacher,
    cache: CompletionCache,
    diversity: int,
    temperature: float,
    max_tokens: int,
) -> tuple[list[dict], TeachRunStats]:
    """One output record per (question, sample index), sorted by question id then sample."""
    stats = TeachRunStats()
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


def summarize_usage(rationales: Sequence[dict]) -> dict:
    """Totals over the completions an output uses (deterministic, unlike run stats)."""
    return {
        "completions": 2 * len(rationales),
        "prompt_tokens": sum(r["usage"]["prompt_tokens"] for r in rationales),
        "completion_tokens": sum(r["usage"]["completion_tokens"] for r in rationales),
        "rationales": len(rationales),
        "questions": len({r["question_id"] for r in rationales}),
    }
