"""Does the default configuration show the paper's effect? Fine-tune-CoT against vanilla
fine-tuning, over seeds, and diverse reasoning (D = 1 against D = 8).

    python benchmarks/effect.py                  # writes metrics/bench_effect.json
    python benchmarks/effect.py --seeds 0 1 2 --diversity-seeds 0

For every seed, both synthetic tasks go through the stages' own library calls, in the order and
with the arguments the stages use (fetch_task, the oracle teacher through teach, filter_rationales,
build_finetune_sets, finetune, then evaluate's reload from the saved folder, generate_greedy,
score_predictions and summarize_predictions), with params.yaml's values and only ``seed`` (and,
for the diversity comparison, ``diversity``) changed. The CPU numerics are pinned first, as every
stage pins them, so seed 0's numbers are the committed pipeline's.

Per task and seed: ft_cot and vanilla accuracy with their 95% Wilson intervals and whether the
intervals separate (ft_cot's lower bound above vanilla's upper bound); per task: mean and sample
standard deviation over seeds; the D = 1 against D = 8 Fine-tune-CoT accuracy for the diversity
seeds; seconds per student (training, evaluation); and the machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Before torch is imported anywhere: the math libraries read these at their first use.
from ftcot.numerics import pin_cpu_numerics, pin_environment  # noqa: E402

pin_environment()

from machine import describe_machine  # noqa: E402

from ftcot.config import Params, load_params  # noqa: E402
from ftcot.data.fetching import fetch_task  # noqa: E402
from ftcot.evaluation.engines import open_generator  # noqa: E402
from ftcot.evaluation.memory import Batching  # noqa: E402
from ftcot.evaluation.scoring import score_predictions, summarize_predictions  # noqa: E402
from ftcot.filtering import filter_rationales  # noqa: E402
from ftcot.io import write_json, write_jsonl  # noqa: E402
from ftcot.methods import FINETUNE_METHODS, FT_COT, VANILLA  # noqa: E402
from ftcot.paths import DOWNLOADS, TEACHER_ANSWERS, cache_folder  # noqa: E402
from ftcot.student.finetune_sets import build_finetune_sets  # noqa: E402
from ftcot.student.formats import answer_end, student_prompt  # noqa: E402
from ftcot.student.models import student_precision  # noqa: E402
from ftcot.student.training import finetune  # noqa: E402
from ftcot.teacher.backends import build_teacher  # noqa: E402
from ftcot.teacher.cache import CompletionCache  # noqa: E402
from ftcot.teacher.teaching import teach  # noqa: E402


def with_overrides(params: Params, overrides: dict[str, object]) -> Params:
    """``params`` with dotted keys replaced (``{"student.epochs": 5}``), validated again."""
    raw = params.model_dump()
    for dotted, value in overrides.items():
        *path, leaf = dotted.split(".")
        section = raw
        for name in path:
            section = section[name]
        if leaf not in section:
            raise KeyError(f"unknown parameter {dotted!r}")
        section[leaf] = value
    return Params.model_validate(raw, strict=False)


def prepare_splits(params: Params, task: str) -> dict[str, list[dict]]:
    """Stages fetch, teach, filter and split for one task."""
    records, _ = fetch_task(task, params.data, params.seed, cache_folder(DOWNLOADS))
    train = [r for r in records if r["split"] == "train"]
    t = params.teacher
    cache = CompletionCache(cache_folder(TEACHER_ANSWERS))
    teacher = build_teacher(params, task, records, cache)
    rationales, _ = teach(train, teacher, cache, params.diversity, t.temperature, t.max_tokens)
    kept, _ = filter_rationales(rationales)
    return build_finetune_sets(records, kept, params.finetune_sets.val_fraction, params.seed)


def evaluate_saved(params: Params, variant: str, model_dir: Path, test: list[dict]) -> tuple[dict, list[dict]]:
    """Stage evaluate on the saved student, through the functions the stage calls: its engine
    (reloaded from the folder), greedy decoding to the answer's end, strict scoring. Returns the
    metrics and the predictions."""
    e = params.evaluate
    precision = student_precision(params.student.model, params.student.precision)
    batching = Batching(e.batch_size, e.memory_fraction)
    with open_generator(e.engine, str(model_dir), precision, batching, what=str(model_dir)) as generator:
        prompts = [student_prompt(ex["question"], generator.encoder_decoder) for ex in test]
        generations = generator.greedy(prompts, e.max_new_tokens, ends=functools.partial(answer_end, variant))
    predictions = score_predictions(test, generations, variant)
    return summarize_predictions(predictions, [ex["id"] for ex in test]), predictions


def train_and_evaluate(params: Params, task: str, variant: str, splits: dict[str, list[dict]], work: Path) -> dict:
    """Stages finetune and evaluate for one student; accuracy, interval and seconds of each."""
    model_dir = work / task / variant
    start, cpu_start = time.perf_counter(), time.process_time()
    train_metrics, _ = finetune(
        splits[f"train_{variant}"], splits[f"val_{variant}"], variant, params.student, params.seed, model_dir, task
    )
    trained = time.perf_counter()
    metrics, predictions = evaluate_saved(params, variant, model_dir, splits["test"])
    write_jsonl(model_dir / "predictions.jsonl", predictions)
    return {
        "accuracy": metrics["accuracy"],
        "ci": [metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]],
        "correct": metrics["correct"],
        "n": metrics["n"],
        "parse_rate": metrics["parse_rate"],
        "truncated": metrics["truncated"],
        "train_examples": train_metrics["train_examples"],
        "truncated_train": train_metrics["truncated_train"],
        "best_step": train_metrics["best_step"],
        "steps": train_metrics["steps"],
        "train_seconds": round(trained - start, 1),
        "eval_seconds": round(time.perf_counter() - trained, 1),
        # CPU time of this process: on a shared machine, a truer measure of the work than wall time.
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
    }


def run_seed(params: Params, work: Path, variants: tuple[str, ...] = FINETUNE_METHODS) -> dict[str, dict]:
    """Every task of ``params`` with the given variants: ``{task: {variant: result}}``."""
    results: dict[str, dict] = {}
    for task in params.data.tasks:
        splits = prepare_splits(params, task)
        results[task] = {v: train_and_evaluate(params, task, v, splits, work) for v in variants}
    return results


def separated(ft_cot: dict, vanilla: dict) -> bool:
    """Fine-tune-CoT wins beyond doubt: its interval lies wholly above vanilla's."""
    return ft_cot["ci"][0] > vanilla["ci"][1]


def mean_sd(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "sd": round(sd, 4)}


def summarize(per_seed: dict[int, dict[str, dict]], tasks: list[str]) -> dict[str, dict]:
    summary = {}
    for task in tasks:
        rows = [per_seed[s][task] for s in per_seed]
        summary[task] = {
            FT_COT: mean_sd([r[FT_COT]["accuracy"] for r in rows]),
            VANILLA: mean_sd([r[VANILLA]["accuracy"] for r in rows]),
            "separated_in_every_seed": all(r["separated"] for r in rows),
        }
    return summary


# The levers, one at a time from the old default to the new one (seed 0, both tasks, both variants):
# the student's positions (GPT-2's learned absolute ones, Llama's rotary ones) and its tokenizer.
ABLATION: dict[str, dict[str, object]] = {
    "old default (tiny-gpt2, bpe, 10 epochs, validation decoding)": {
        "student.model": "tiny-gpt2",
        "student.tiny.tokenizer": "bpe",
        "student.epochs": 10.0,
        "student.val_accuracy": True,
    },
    "tiny-gpt2, word_char": {"student.model": "tiny-gpt2", "student.tiny.tokenizer": "word_char"},
    "tiny-llama, bpe": {"student.model": "tiny-llama", "student.tiny.tokenizer": "bpe"},
    "tiny-llama, word_char (default)": {"student.model": "tiny-llama", "student.tiny.tokenizer": "word_char"},
}


def reusable(previous: dict | None, base: Params) -> dict:
    """The results of an earlier run of this benchmark (``--reuse``); exits if it measured another
    student or other data parameters. Same inputs give the same numbers (the numerics are pinned),
    so reusing them is rerunning them, minus the wait; wall_seconds then counts only the new work."""
    if not previous:
        return {}
    recorded = previous.get("params", {})
    same = recorded.get("student") == base.student.model_dump()
    # Files written before the data parameters were recorded: the student's must match.
    same = same and recorded.get("data", base.data.model_dump(mode="json")) == base.data.model_dump(mode="json")
    if not same:
        raise SystemExit("--reuse: that file measured other student or data parameters; run without it")
    return previous


def run_effect(
    base: Params, seeds: list[int], diversity_seeds: list[int], high_d: int, work: Path, previous: dict | None = None
) -> dict:
    """Fine-tune-CoT against vanilla for every seed, and D = params' diversity against ``high_d``."""
    old = reusable(previous, base)
    per_seed: dict[int, dict[str, dict]] = {}
    for seed in seeds:
        if str(seed) in old.get("per_seed", {}):
            per_seed[seed] = old["per_seed"][str(seed)]
            print(f"seed {seed}: reused", flush=True)
            continue
        results = run_seed(with_overrides(base, {"seed": seed}), work / f"seed{seed}")
        for r in results.values():
            r["separated"] = separated(r[FT_COT], r[VANILLA])
        per_seed[seed] = results
        print(f"seed {seed}: " + ", ".join(describe(task, r) for task, r in results.items()), flush=True)
    diversity: dict[str, dict] = {}
    for seed in diversity_seeds:
        earlier = old.get("diversity", {}).get(str(seed), {})
        if all(f"D={high_d}" in earlier.get(task, {}) for task in base.data.tasks):
            diversity[str(seed)] = earlier
            print(f"seed {seed}, D={high_d}: reused", flush=True)
            continue
        high = run_seed(
            with_overrides(base, {"seed": seed, "diversity": high_d}), work / f"d{high_d}-{seed}", (FT_COT,)
        )
        low = per_seed[seed] if seed in per_seed else run_seed(with_overrides(base, {"seed": seed}), work / f"d-{seed}")
        diversity[str(seed)] = {
            task: {f"D={base.diversity}": low[task][FT_COT], f"D={high_d}": high[task][FT_COT]}
            for task in base.data.tasks
        }
        print(f"seed {seed}, D={high_d}: " + ", ".join(f"{t} ft_cot {high[t][FT_COT]['accuracy']:.3f}" for t in high))
    return {
        "seeds": seeds,
        "per_seed": {str(s): r for s, r in per_seed.items()},
        "summary": summarize(per_seed, base.data.tasks),
        "diversity": diversity,
        "separated_definition": "ft_cot's 95% Wilson interval lies wholly above vanilla's (they do not overlap)",
    }


def run_ablation(base: Params, seed: int, work: Path) -> dict:
    """Every configuration of ``ABLATION`` at one seed."""
    rows = {}
    for i, (name, overrides) in enumerate(ABLATION.items()):
        results = run_seed(with_overrides(base, {**overrides, "seed": seed}), work / f"ablation{i}")
        for r in results.values():
            r["separated"] = separated(r[FT_COT], r[VANILLA])
        rows[name] = {"overrides": overrides, "results": results}
        print(f"{name}: " + ", ".join(describe(task, r) for task, r in results.items()), flush=True)
    return {"seed": seed, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="default: metrics/bench_effect.json (--ablation: bench_effect_ablation.json)")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--diversity-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--diversity", type=int, default=8, help="D compared with params.yaml's diversity")
    parser.add_argument("--ablation", action="store_true", help="the levers one at a time, at the first seed")
    parser.add_argument("--reuse", help="an earlier bench_effect.json: its seeds and D points are not recomputed")
    args = parser.parse_args()

    numerics = pin_cpu_numerics()
    base = load_params(args.params)
    load_at_start = round(os.getloadavg()[0], 2)  # other work on the machine slows the wall time down
    start, cpu_start = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="ftcot-effect-") as tmp:
        if args.ablation:
            out = run_ablation(base, args.seeds[0], Path(tmp))
        else:
            previous = json.loads(Path(args.reuse).read_text()) if args.reuse else None
            out = run_effect(base, args.seeds, args.diversity_seeds, args.diversity, Path(tmp), previous)
    name = "bench_effect_ablation.json" if args.ablation else "bench_effect.json"
    write_json(
        args.out or REPO / "metrics" / name,
        {
            "params": {
                "file": str(Path(args.params).resolve().relative_to(REPO)),
                "student": base.student.model_dump(),
                "data": base.data.model_dump(mode="json"),
            },
            **out,
            "reused_from": args.reuse,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
            "load_average_1min_at_start": load_at_start,
            "numerics": numerics,
            "machine": describe_machine(),
        },
    )


def describe(task: str, result: dict) -> str:
    ft, va = result[FT_COT], result[VANILLA]
    mark = "separated" if result["separated"] else "overlapping"
    return f"{task} ft_cot {ft['accuracy']:.3f} vs vanilla {va['accuracy']:.3f} ({mark})"


if __name__ == "__main__":
    main()
