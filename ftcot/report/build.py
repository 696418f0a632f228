"""The report stage's work (stages/report.py): read what the other stages wrote where
ftcot/paths.py says, check it, and write the summary, the headline metrics and report/."""

from __future__ import annotations

import shutil
from pathlib import Path

from ftcot import paths
from ftcot.config import Params
from ftcot.evaluation.scoring import check_predictions_file, summarize_predictions
from ftcot.filtering import judge_rationales
from ftcot.io import read_json, read_jsonl, write_json
from ftcot.methods import FT_COT
from ftcot.paths import evaluation_run, path
from ftcot.provenance import run_metadata, teacher_label
from ftcot.report.document import render_html, render_markdown
from ftcot.report.figures import plot_accuracy, plot_sweep, plot_training_curves
from ftcot.report.summary import ReportError, accuracy_rows, build_summary, combine_seeds, headline
from ftcot.report.sweep import sweep_stale_reason
from ftcot.stage import log


def _read_metrics(file: Path, why: str) -> dict:
    if not file.is_file():
        raise ReportError(f"{file}: missing ({why}); run `dvc repro` to produce it")
    return read_json(file)


def _curves(trained: dict) -> dict[str, list[tuple[float, float]]]:
    """The training curves a finetune stage recorded: train and validation loss, validation accuracy."""
    curve = trained.get("curve", [])
    curves = {
        "train/loss": [(row["step"], row["loss"]) for row in curve if "loss" in row],
        "eval/loss": [(row["step"], row["eval_loss"]) for row in curve if "eval_loss" in row],
        "eval/accuracy": [(row["step"], row["accuracy"]) for row in trained.get("val_accuracy_by_epoch", [])],
    }
    return {k: v for k, v in curves.items() if v}


def write_report(params: Params) -> None:
    """Everything the report stage writes, from the outputs of a finished run of ``params``:
    metrics/summary.json, metrics/headline.json and report/. Raises ReportError, before writing
    anything, when an output is missing or does not match the test set."""
    tasks = params.data.tasks
    seeds = params.seeds
    methods = [*params.methods.prompting, *params.methods.finetune]
    teach_metrics = {t: _read_metrics(path(paths.TEACH_METRICS, task=t), "stage teach") for t in tasks}
    filter_metrics = {t: _read_metrics(path(paths.FILTER_METRICS, task=t), "stage filter") for t in tasks}
    k = params.report.num_samples
    teacher_samples, student_samples = {}, {}
    eval_metrics: dict[str, dict[str, dict]] = {t: {} for t in tasks}
    devices: dict[str, str] = {}
    answer_types: dict[str, str] = {}
    curves: dict[str, dict] = {t: {} for t in tasks}
    for t in tasks:
        test_path = path(paths.FINETUNE_SET, task=t, name="test")
        test = read_jsonl(test_path, required=("id", "answer_type"))
        if not test:
            raise ReportError(f"{test_path}: the test set is empty")
        answer_types[t] = test[0]["answer_type"]  # from the data: the report does not read task files
        predictions = {}
        for m in methods:
            # Fine-tuned students: one evaluation per seed; the prompting baselines have no training seed.
            finetuned = m in params.methods.finetune
            runs = [evaluation_run(m, s) for s in seeds] if finetuned else [evaluation_run(m)]
            per_run = {}
            for run in runs:
                predictions_path = path(paths.PREDICTIONS, task=t, run=run)
                per_run[run] = read_jsonl(predictions_path, required=("id", "correct", "prediction", "generated"))
                check_predictions_file(per_run[run], test, str(predictions_path))
            found = {
                run: _read_metrics(path(paths.EVAL_METRICS, task=t, run=run), f"method {m} in params.yaml methods")
                for run in runs
            }
            if finetuned:
                pooled = summarize_predictions([p for run in runs for p in per_run[run]])
                eval_metrics[t][m] = combine_seeds(dict(zip(seeds, found.values(), strict=True)), pooled)
                for s in seeds:
                    trained = _read_metrics(path(paths.FINETUNE_METRICS, task=t, variant=m, seed=s), "stage finetune")
                    devices[f"{t}/{m}/seed{s}"] = trained.get("device", "not recorded")
                    if found_curves := _curves(trained):
                        curves[t][m, s] = found_curves
            else:
                eval_metrics[t][m] = found[runs[0]]
            predictions[m] = per_run[runs[0]]  # the samples shown: the first seed's student
        # What the filter decided (under filter.keep: all, wrong answers are kept too), not a
        # second judgement of the teacher's answers.
        kept = read_jsonl(path(paths.KEPT, task=t))
        kept_ids = {r["id"] for r in kept}
        judged = judge_rationales(read_jsonl(path(paths.TAUGHT, task=t)))
        teacher_samples[t] = {"kept": kept[:k], "dropped": [r for r in judged if r["id"] not in kept_ids][:k]}
        if FT_COT in predictions:
            student_samples[t] = {
                "correct": [p for p in predictions[FT_COT] if p["correct"]][:k],
                "wrong": [p for p in predictions[FT_COT] if not p["correct"]][:k],
            }

    setup = {
        "teacher": teacher_label(params.teacher.model_dump(mode="json")),
        "student": params.student.model + (" (LoRA)" if params.student.tuning == "lora" else ""),
        "diversity": params.diversity,
        "self_consistency_samples": params.evaluate.samples,
        "seeds": seeds,
    }
    summary = build_summary(tasks, answer_types, teach_metrics, filter_metrics, eval_metrics, setup)
    summary["run"] = run_metadata(Path.cwd(), params.model_dump(mode="json"), devices)
    write_json(paths.SUMMARY, summary)
    headline_metrics = headline(summary)
    write_json(paths.HEADLINE, headline_metrics)

    out = Path(paths.REPORT_DIR)
    shutil.rmtree(out, ignore_errors=True)  # no figure of a task that is no longer run
    out.mkdir(parents=True)
    figures = {"accuracy": "accuracy.png"}
    plot_accuracy(summary, out / figures["accuracy"])
    for t in tasks:
        if curves[t]:
            figures[f"curves/{t}"] = f"curves_{t}.png"
            plot_training_curves(t, curves[t], out / figures[f"curves/{t}"])
    sweeps = []
    for sweep_path in sorted(Path(paths.SWEEPS).glob("*.json")):
        record = read_json(sweep_path)
        reason = sweep_stale_reason(record, params.model_dump(mode="json"), headline_metrics)
        name = record.get("name", sweep_path.stem)
        if reason:
            regenerate = record.get("regenerate", "python scripts/sweep.py")
            note = f"The recorded sweep `{sweep_path}` is left out: {reason}. `{regenerate}` recomputes it."
            sweeps.append({"name": name, "note": note})
            log.warning("sweep %s left out of the report: %s", name, reason)
            continue
        record = {**record, "points": [p for p in record["points"] if p["task"] in tasks]}
        if record["points"]:
            figures[f"sweep/{name}"] = f"sweep_{name}.png"
            plot_sweep(record, out / figures[f"sweep/{name}"])
        sweeps.append(record)
    write_json(out / "accuracy.json", {"rows": accuracy_rows(summary)})
    markdown = render_markdown(summary, teacher_samples, student_samples, figures, sweeps)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(render_html(markdown, out))
    log.info("report: %s, %s", out / "report.md", out / "report.html")
