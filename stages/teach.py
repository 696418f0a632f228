"""Stage teach: `diversity` zero-shot-CoT rationales per train question, from the teacher.

    python stages/teach.py --task coin_flip --records data/fetch/coin_flip.jsonl \
        --out data/teach/coin_flip.jsonl --metrics metrics/teach/coin_flip.json

Completions go through the persistent completion cache ($FTCOT_CACHE_DIR/teacher, default
~/.cache/finetune-cot/teacher): what was once received is never requested again.
"""

import argparse

from ftcot.config import load_params
from ftcot.io import read_jsonl, write_json, write_jsonl
from ftcot.stage import log, run_stage
from ftcot.teachers import CompletionCache, default_cache_dir
from ftcot.teachers.oracle import OracleTeacher, UnsupportedQuestion
from ftcot.teaching import summarize_usage, teach


def build_teacher(params):
    t = params.teacher
    if t.backend == "oracle":
        return OracleTeacher(model=t.model, error_rate=t.oracle.error_rate, seed=params.seed)
    raise ValueError(f"teacher.backend: unknown backend {t.backend!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()

    params = load_params()
    records = read_jsonl(args.records, required=("id", "question", "answer", "answer_type", "split"))
    train = [r for r in records if r["split"] == "train"]
    teacher = build_teacher(params)
    cache = CompletionCache(default_cache_dir() / "teacher")
    log.info("teacher %s (%s), %d cached completions in %s", teacher.backend, teacher.model, len(cache), cache.path)

    rationales, stats = teach(
        train, teacher, cache, params.diversity, params.teacher.temperature, params.teacher.max_tokens
    )
    write_jsonl(args.out, rationales)
    usage = summarize_usage(rationales)
    write_json(
        args.metrics, {"backend": teacher.backend, "model": teacher.model, "diversity": params.diversity, **usage}
    )
    log.info(
        "%s: %d rationales; this run sent %d requests, %d cache hits",
        args.task,
        len(rationales),
        stats.requests_sent,
        stats.cache_hits,
    )


if __name__ == "__main__":
    run_stage(main, UnsupportedQuestion)
