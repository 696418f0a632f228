"""The summary table, the Markdown report and its plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ftcot.formats import VARIANTS

VARIANT_NAMES = {"ft_cot": "Fine-tune-CoT", "vanilla": "Vanilla fine-tuning"}


def build_summary(
    tasks: Sequence[str],
    filter_metrics: Mapping[str, dict],
    eval_metrics: Mapping[str, Mapping[str, dict]],
    diversity: int,
    teach_metrics: Mapping[str, dict] | None = None,
) -> dict:
    """``{task: {teacher_accuracy, kept_rate, kept, ft_cot_accuracy, vanilla_accuracy, ...}}``."""
    summary: dict = {"diversity": diversity, "tasks": {}}
    for task in tasks:
        f = filter_metrics[task]
        t = (teach_metrics or {}).get(task, {})
        row = {
            "teacher_test_accuracy": t.get("teacher_test_accuracy"),
            "teacher_cost_usd": t.get("estimated_cost_usd"),
            "teacher_accuracy": f["teacher_accuracy"],
            "kept_rate": f["kept_rate"],
            "kept": f["kept"],
            "rationales": f["rationales"],
        }
        for variant in VARIANTS:
            m = eval_metrics[task][variant]
            row[f"{variant}_accuracy"] = m["accuracy"]
            row[f"{variant}_parse_rate"] = m["parse_rate"]
            row["test_n"] = m["n"]
        summary["tasks"][task] = row
    return summary


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_markdown(
    summary: dict,
    samples: Mapping[str, Sequence[dict]],
    plot_name: str | None,
    student_samples: Mapping[str, Sequence[dict]] | None = None,
) -> str:
    """The report: the table, the plot, teacher rationales and Fine-tune-CoT student outputs."""
    lines = [
        "# Fine-tune-CoT report",
        "",
        f"Diversity (rationales per train question): {summary['diversity']}. "
        "Accuracies in %, on each task's test split.",
        "",
        "| Task | Teacher zero-shot-CoT (test) | Teacher (train, sample 0) | Kept rationales | Fine-tune-CoT "
        "| Vanilla fine-tuning | Test n | Teacher cost (USD) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, row in summary["tasks"].items():
        teacher_test = "–" if row.get("teacher_test_accuracy") is None else _pct(row["teacher_test_accuracy"])
        cost = "–" if row.get("teacher_cost_usd") is None else f"{row['teacher_cost_usd']:.4f}"
        lines.append(
            f"| {task} | {teacher_test} | {_pct(row['teacher_accuracy'])} "
            f"| {row['kept']}/{row['rationales']} ({_pct(row['kept_rate'])}) "
            f"| {_pct(row['ft_cot_accuracy'])} | {_pct(row['vanilla_accuracy'])} | {row['test_n']} | {cost} |"
        )
    if plot_name:
        lines += ["", f"![Test accuracy per task]({plot_name})"]
    for task, examples in samples.items():
        if not examples:
            continue
        lines += ["", f"## Sample rationales: {task}", ""]
        for ex in examples:
            lines += [
                f"**Q:** {ex['question']}",
                "",
                f"**Teacher rationale:** {ex['rationale']}",
                "",
                f"**Answer:** {ex['answer']}",
                "",
            ]
    for task, preds in (student_samples or {}).items():
        if not preds:
            continue
        lines += ["", f"## Fine-tune-CoT student outputs on test questions: {task}", ""]
        for p in preds:
            verdict = "correct" if p["correct"] else f"wrong (gold: {p['answer']})"
            lines += [f"**Q:** {p['question']}", "", f"**Student:** {p['generated'].strip()} ({verdict})", ""]
    return "\n".join(lines).rstrip() + "\n"


def plot_accuracy(summary: dict, path: str | Path) -> None:
    """Grouped bars: test accuracy per task, Fine-tune-CoT vs vanilla (PNG, no timestamp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(tasks)), 3.2))
    for k, variant in enumerate(VARIANTS):
        values = [100 * summary["tasks"][t][f"{variant}_accuracy"] for t in tasks]
        xs = [i + (k - 0.5) * width for i in range(len(tasks))]
        ax.bar(xs, values, width, label=VARIANT_NAMES[variant])
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"Student accuracy (diversity {summary['diversity']})")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
