"""Stage teach: `diversity` zero-shot-CoT rationales per train question, from the teacher.

    python stages/teach.py --task coin_flip --records data/fetch/coin_flip.jsonl \
        --out data/teach/coin_flip.jsonl --test-out data/teach/coin_flip.test.jsonl \
        --metrics metrics/teach/coin_flip.json

Completions go through the persistent completion cache ($FTCOT_CACHE_DIR/teacher, default
~/.cache/finetune-cot/teacher): what was once received is never requested again, and what another
run is already asking for is waited for, not paid twice. What this run cost (requests sent, cache
hits, answers waited for, damaged cache records, failures, seconds) goes to <metrics>.run.json,
which DVC does not track because it depends on the cache rather than on the parameters.

Before the first request, the stage estimates what the run will cost (an upper bound over the
requests the cache cannot answer, priced with teacher.prices) and logs it; with
teacher.max_cost_usd set, an estimate over it stops the stage before anything is sent, and the run
stops once what it spent reaches it (what was received stays cached). --estimate prints the
estimate and sends nothing:

    python stages/teach.py --task gsm8k --records data/fetch/gsm8k.jsonl --estimate
"""

import argparse
import json
from pathlib import Path

from ftcot.config import load_params
from ftcot.filtering import judge_rationales
from ftcot.io import read_jsonl, write_json, write_jsonl
from ftcot.paths import TEACHER_ANSWERS, cache_folder
from ftcot.stage import log, run_stage
from ftcot.teacher.backends import BACKENDS, build_teacher, precheck
from ftcot.teacher.budget import Budget, check_estimate, estimate_teaching
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.teaching import TeachRunStats, summarize_usage, teach


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--out")
    parser.add_argument("--test-out")
    parser.add_argument("--metrics")
    parser.add_argument("--estimate", action="store_true", help="print what the run would cost; send nothing")
    args = parser.parse_args()
    if not args.estimate and not (args.out and args.test_out and args.metrics):
        parser.error("--out, --test-out and --metrics are required (unless --estimate)")

    params = load_params()
    t = params.teacher
    records = read_jsonl(args.records, required=("id", "question", "answer", "answer_type", "split"))
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    cache = CompletionCache(cache_folder(TEACHER_ANSWERS))
    teacher = build_teacher(params, args.task, records, cache)
    log.info("teacher %s (%s), cache %s", teacher.backend, teacher.model, cache.path)
    price = t.prices[t.model].model_dump() if t.model in t.prices else None
    # e.g. a replay's coverage of the questions asked, before anything is replayed
    checked = precheck(t.backend, teacher, train, test if t.eval_test else [], params.diversity)

    budget = None
    if BACKENDS[t.backend].paid or args.estimate:
        groups = [(train, params.diversity)] + ([(test, 1)] if t.eval_test else [])
        estimate = estimate_teaching(groups, teacher, cache, t.temperature, t.max_tokens, price)
        log.info("%s: %s", args.task, estimate.describe())
        if args.estimate:
            cache.close()
            print(f"{args.task}: {estimate.describe()}")
            return
        check_estimate(estimate, t.max_cost_usd, t.model)  # before any request
        if t.max_cost_usd is not None:
            budget = Budget(t.max_cost_usd, price)

    stats = TeachRunStats()
    try:
        rationales, _ = teach(train, teacher, cache, params.diversity, t.temperature, t.max_tokens, stats, budget)
        write_jsonl(args.out, rationales)
        metrics = {"backend": teacher.backend, "model": teacher.model, "diversity": params.diversity}
        metrics |= summarize_usage(rationales, price) | checked
        test_rationales: list[dict] = []
        if t.eval_test:
            # The paper's "Teacher" row: greedy zero-shot-CoT (sample 0) on the test questions.
            test_rationales, _ = teach(test, teacher, cache, 1, t.temperature, t.max_tokens, stats, budget)
            judged = judge_rationales(test_rationales)
            metrics["teacher_test_n"] = len(judged)
            metrics["teacher_test_accuracy"] = round(sum(r["correct"] for r in judged) / max(1, len(judged)), 6)
            test_rationales = judged
        write_jsonl(args.test_out, test_rationales)
        write_json(args.metrics, metrics)
    finally:
        cache.close()  # gives up any claim at once, for a run that waits on it
        run = {
            "requests_sent": stats.requests_sent,
            "cache_hits": stats.cache_hits,
            "from_other_runs": stats.from_other_runs,
            "damaged_cache_records": stats.damaged_cache_records,
            "failed": stats.failed,
            "seconds": round(stats.seconds, 3),
        }
        Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(args.metrics).with_suffix(".run.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
        log.info(
            "%s: this run sent %d requests, %d cache hits, %d waited for from another run, %d damaged cache "
            "records asked again, %d failed",
            args.task,
            stats.requests_sent,
            stats.cache_hits,
            stats.from_other_runs,
            stats.damaged_cache_records,
            stats.failed,
        )
    cost = metrics["estimated_cost_usd"]
    priced = "no price set (teacher.prices)" if cost is None else f"estimated cost {cost} USD"
    log.info("%s: %d rationales, %s", args.task, len(rationales), priced)


if __name__ == "__main__":
    run_stage(main)
