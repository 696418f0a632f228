"""Stage report: the paper's table and everything around it.

    python stages/report.py --teach-metrics metrics/teach --filter-metrics metrics/filter \
        --eval-metrics metrics/evaluate --teach data/teach --predictions data/evaluate \
        --split data/split --curves curves --diversity metrics/diversity.json \
        --summary metrics/summary.json --headline metrics/headline.json \
        --finetune-metrics metrics/finetune --out-dir report

Writes metrics/summary.json (every number of the report, and what produced the run: code,
resolved params, packages, devices, seeds, teacher), metrics/headline.json (the compact numbers
`dvc metrics diff` and `dvc exp show` compare) and, in the output folder, report.md,
report.html (self-contained: images inline), accuracy.png (a bar chart per task),
curves_<task>.png (training curves), diversity.png (when a sweep is recorded) and
accuracy.json (the rows of `dvc plots`). Every method listed in params.yaml `methods` must have
been evaluated, on exactly the task's test set.
"""

import argparse
import shutil
from pathlib import Path

from ftcot.config import load_params
from ftcot.evaluation import EvaluationError, check_predictions_file, summarize_predictions
from ftcot.filtering import judge_rationales
from ftcot.io import DataError, read_json, read_jsonl, write_json
from ftcot.provenance import run_metadata
from ftcot.report import (
    ReportError,
    accuracy_rows,
    build_summary,
    combine_seeds,
    headline,
    plot_accuracy,
    plot_diversity,
    plot_training_curves,
    read_curve,
    render_html,
    render_markdown,
)
from ftcot.stage import log, run_stage
from ftcot.sweep import stale_reason
from ftcot.tasks import get_task

CURVE_KEYS = ("train/loss", "eval/loss", "eval/accuracy")


def _read_metrics(path: Path, why: str) -> dict:
    if not path.is_file():
        raise ReportError(f"{path}: missing ({why}); run `dvc repro` to produce it")
    return read_json(path)


def _curves(curves_dir: Path, task: str, methods: list[str], seeds: list[int]) -> dict:
    found = {}
    for method in methods:
        for seed in seeds:
            root = curves_dir / task / method / f"seed{seed}" / "plots" / "metrics"
            found[method, seed] = {
                k: read_curve(root / f"{k}.tsv") for k in CURVE_KEYS if (root / f"{k}.tsv").is_file()
            }
    return {key: c for key, c in found.items() if c}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("teach-metrics", "filter-metrics", "eval-metrics", "teach", "predictions", "split", "curves"):
        parser.add_argument(f"--{name}", required=True, type=Path)
    parser.add_argument("--diversity", required=True, type=Path, help="recorded sweep (scripts/diversity_sweep.py)")
    parser.add_argument("--summary", required=True)
    parser.add_argument("--headline", required=True, help="the compact metrics file (dvc metrics)")
    parser.add_argument("--finetune-metrics", required=True, type=Path, help="where each student trained")
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args()

    params = load_params()
    tasks = params.data.tasks
    seeds = params.seeds
    methods = [*params.methods.prompting, *params.methods.finetune]
    teach_metrics = {t: _read_metrics(args.teach_metrics / f"{t}.json", "stage teach") for t in tasks}
    filter_metrics = {t: _read_metrics(args.filter_metrics / f"{t}.json", "stage filter") for t in tasks}
    k = params.report.num_samples
    teacher_samples, student_samples = {}, {}
    eval_metrics: dict[str, dict[str, dict]] = {t: {} for t in tasks}
    devices: dict[str, str] = {}
    for t in tasks:
        test = read_jsonl(args.split / t / "test.jsonl", required=("id",))
        predictions = {}
        for m in methods:
            # Fine-tuned students: one file per seed; the prompting baselines have no training seed.
            names = [f"{m}/seed{s}" for s in seeds] if m in params.methods.finetune else [m]
            per_file = {}
            for name in names:
                path = args.predictions / t / f"{name}.jsonl"
                per_file[name] = read_jsonl(path, required=("id", "correct", "prediction", "generated"))
                check_predictions_file(per_file[name], test, str(path))
            found = {
                name: _read_metrics(args.eval_metrics / t / f"{name}.json", f"method {m} in params.yaml methods")
                for name in names
            }
            if m in params.methods.finetune:
                pooled = summarize_predictions([p for name in names for p in per_file[name]])
                eval_metrics[t][m] = combine_seeds(dict(zip(seeds, found.values(), strict=True)), pooled)
                for s in seeds:
                    trained = _read_metrics(args.finetune_metrics / t / m / f"seed{s}.json", "stage finetune")
                    devices[f"{t}/{m}/seed{s}"] = trained.get("device", "not recorded")
            else:
                eval_metrics[t][m] = found[m]
            predictions[m] = per_file[names[0]]  # the samples shown: the first seed's student
        judged = judge_rationales(read_jsonl(args.teach / f"{t}.jsonl"))
        teacher_samples[t] = {
            "kept": [r for r in judged if r["correct"]][:k],
            "dropped": [r for r in judged if not r["correct"]][:k],
        }
        if "ft_cot" in predictions:
            student_samples[t] = {
                "correct": [p for p in predictions["ft_cot"] if p["correct"]][:k],
                "wrong": [p for p in predictions["ft_cot"] if not p["correct"]][:k],
            }

    setup = {
        "teacher": params.teacher.model,
        "student": params.student.model + (" (LoRA)" if params.student.method == "lora" else ""),
        "diversity": params.diversity,
        "self_consistency_samples": params.evaluate.samples,
        "seeds": seeds,
    }
    answer_types = {t: get_task(t).answer_type for t in tasks}
    summary = build_summary(tasks, answer_types, teach_metrics, filter_metrics, eval_metrics, setup)
    summary["run"] = run_metadata(Path.cwd(), params.model_dump(mode="json"), devices)
    write_json(args.summary, summary)
    write_json(args.headline, headline(summary))

    out = args.out_dir
    shutil.rmtree(out, ignore_errors=True)  # no figure of a task that is no longer run
    out.mkdir(parents=True)
    figures = {"accuracy": "accuracy.png"}
    plot_accuracy(summary, out / figures["accuracy"])
    for t in tasks:
        curves = _curves(args.curves, t, list(params.methods.finetune), seeds)
        if curves:
            figures[f"curves/{t}"] = f"curves_{t}.png"
            plot_training_curves(t, curves, out / figures[f"curves/{t}"])
    recorded = read_json(args.diversity) if args.diversity.is_file() else {}
    this_run = {t: m["ft_cot"]["accuracy"] for t, m in eval_metrics.items() if "ft_cot" in m}
    sweep_note = None
    if recorded.get("points"):
        reason = stale_reason(recorded, params.model_dump(mode="json"), this_run, params.diversity)
        if reason:
            sweep_note = (
                f"The recorded sweep (`{args.diversity}`, commit {recorded.get('commit', 'unknown')}) is left out: "
                f"{reason}. `python scripts/diversity_sweep.py` recomputes it for this configuration."
            )
            log.warning("diversity sweep left out of the report: %s", reason)
    points = [] if sweep_note else [p for p in recorded.get("points", []) if p["task"] in tasks]
    if points:
        figures["diversity"] = "diversity.png"
        plot_diversity(points, out / figures["diversity"])
    write_json(out / "accuracy.json", {"rows": accuracy_rows(summary)})
    markdown = render_markdown(summary, teacher_samples, student_samples, figures, points, sweep_note)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(render_html(markdown, out))
    log.info("report: %s, %s", out / "report.md", out / "report.html")


if __name__ == "__main__":
    run_stage(main, ReportError, EvaluationError, DataError)
