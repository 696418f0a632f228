"""The paper-style summary (metrics/summary.json) and the compact numbers DVC compares
(metrics/headline.json): pure functions of the stage outputs, so the same inputs give the same bytes."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from ftcot.answers import get_answer_type
from ftcot.errors import FtcotError
from ftcot.methods import METHODS

# Table order: the paper's Table 1, top to bottom.
METHOD_ORDER = tuple(METHODS)  # the paper's order: prompting, vanilla, Fine-tune-CoT
EVAL_KEYS = (
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "flexible_accuracy",
    "contains_answer",
    "parse_rate",
    "truncated",
    "mean_generated_tokens",
    "n",
)


class ReportError(FtcotError, ValueError):
    """The stage outputs the report reads are missing or inconsistent."""


def combine_seeds(per_seed: Mapping[int, dict], pooled: dict) -> dict:
    """One fine-tuned method's metrics over its seeds.

    ``per_seed``: each seed's evaluate metrics; ``pooled``: ``summarize_predictions`` over the
    predictions of every seed together. The accuracy is the mean over seeds (every seed answers the
    same test questions), its interval the Wilson interval of all those answers (the uncertainty
    of the test sample), and ``accuracy_sd`` the sample standard deviation over seeds (the
    uncertainty of training; None for one seed). ``n`` stays the size of the test set.
    """
    sizes = {m["n"] for m in per_seed.values()}
    if len(sizes) != 1:
        raise ReportError(f"the seeds {sorted(per_seed)} were evaluated on test sets of sizes {sorted(sizes)}")
    accuracies = [per_seed[s]["accuracy"] for s in sorted(per_seed)]
    combined = dict(pooled, n=sizes.pop(), num_seeds=len(per_seed))
    combined["accuracy_sd"] = round(statistics.stdev(accuracies), 6) if len(accuracies) > 1 else None
    combined["seeds"] = {
        str(s): {k: per_seed[s][k] for k in ("accuracy", "accuracy_ci_low", "accuracy_ci_high")}
        for s in sorted(per_seed)
    }
    return combined


def build_summary(
    tasks: Sequence[str],
    answer_types: Mapping[str, str],
    teach_metrics: Mapping[str, dict],
    filter_metrics: Mapping[str, dict],
    eval_metrics: Mapping[str, Mapping[str, dict]],
    setup: Mapping[str, object],
) -> dict:
    """``{setup..., tasks: {task: {random, teacher: {...}, <method>: {accuracy, ...}}}}``: one
    nested key per number, so ``dvc metrics diff`` compares task by task and method by method."""
    summary: dict = {**setup, "tasks": {}}
    for task in tasks:
        t, f = teach_metrics[task], filter_metrics[task]
        row: dict = {
            "random": round(get_answer_type(answer_types[task]).chance, 6),
            "teacher": {
                "test_accuracy": t.get("teacher_test_accuracy"),
                "train_accuracy": f["teacher_accuracy"],
                "rationales": f["rationales"],
                "kept": f["kept"],
                "kept_rate": f["kept_rate"],
                "question_coverage": f["question_coverage"],
                "prompt_tokens": t.get("prompt_tokens"),
                "completion_tokens": t.get("completion_tokens"),
                "cost_usd": t.get("estimated_cost_usd"),
            },
        }
        sizes = set()
        for method in METHOD_ORDER:
            m = eval_metrics.get(task, {}).get(method)
            if m is None:
                continue
            row[method] = {k: m[k] for k in EVAL_KEYS}
            row[method] |= {k: m.get(k, default) for k, default in (("num_seeds", 1), ("accuracy_sd", None))}
            if "seeds" in m:
                row[method]["seeds"] = m["seeds"]
            if "self_consistency" in m:
                row[method]["self_consistency"] = m["self_consistency"]
            sizes.add(m["n"])
        if len(sizes) > 1:
            raise ReportError(f"{task}: methods were evaluated on test sets of different sizes {sorted(sizes)}")
        summary["tasks"][task] = row
    return summary


def headline(summary: dict) -> dict:
    """The compact metrics a researcher compares across runs (``metrics/headline.json``, the file
    ``dvc metrics`` and ``dvc exp show`` read): per task, the teacher's kept rate, test accuracy and
    cost, and per method the accuracy with its interval (and sd over seeds), and the parse rate.
    Numbers only; a value the run does not have (a cost without prices) is left out, not null."""
    out: dict = {}
    for task, row in summary["tasks"].items():
        t = row["teacher"]
        teacher = {
            "kept": t["kept"],
            "kept_rate": t["kept_rate"],
            "test_accuracy": t["test_accuracy"],
            "cost_usd": t["cost_usd"],
        }
        entry: dict = {"teacher": {k: v for k, v in teacher.items() if v is not None}}
        for method in METHOD_ORDER:
            if method not in row:
                continue
            m = row[method]
            keys = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_sd", "parse_rate")
            entry[method] = {k: m[k] for k in keys if m.get(k) is not None}
            if "self_consistency" in m:
                sc = m["self_consistency"]
                entry[f"{method}_self_consistency"] = {
                    k: sc[k] for k in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "parse_rate")
                }
        out[task] = entry
    return out


def accuracy_rows(summary: dict) -> list[dict]:
    """Flat rows for ``dvc plots`` (one bar per task and method)."""
    rows = []
    for task, row in summary["tasks"].items():
        if row["teacher"]["test_accuracy"] is not None:
            rows.append(
                {
                    "run": f"{task} / teacher",
                    "task": task,
                    "method": "teacher",
                    "accuracy": row["teacher"]["test_accuracy"],
                }
            )
        for method in METHOD_ORDER:
            if method in row:
                rows.append(
                    {"run": f"{task} / {method}", "task": task, "method": method, "accuracy": row[method]["accuracy"]}
                )
    return rows
