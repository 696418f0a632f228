"""The report's figures (PNG, no timestamp: the same data give the same bytes): accuracy per task
and method, training curves, accuracy against diversity."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ftcot.methods import METHODS
from ftcot.report.summary import METHOD_ORDER


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same bytes every run
    _pyplot().close(fig)


def plot_accuracy(summary: dict, path: str | Path) -> None:
    """A bar chart per task: each method's test accuracy with its 95% interval; the teacher and
    chance as lines."""
    plt = _pyplot()
    tasks = list(summary["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        row = summary["tasks"][task]
        methods = [m for m in METHOD_ORDER if m in row]
        values = [100 * row[m]["accuracy"] for m in methods]
        errors = [
            [100 * (row[m]["accuracy"] - row[m]["accuracy_ci_low"]) for m in methods],
            [100 * (row[m]["accuracy_ci_high"] - row[m]["accuracy"]) for m in methods],
        ]
        ax.bar(
            range(len(methods)), values, yerr=errors, capsize=3, color=[f"C{METHOD_ORDER.index(m)}" for m in methods]
        )
        ax.set_xticks(range(len(methods)), [METHODS[m].name.replace(" ", "\n", 1) for m in methods], fontsize=7)
        if row["teacher"]["test_accuracy"] is not None:
            ax.axhline(100 * row["teacher"]["test_accuracy"], color="k", ls="--", lw=1, label="teacher")
        if row["random"]:
            ax.axhline(100 * row["random"], color="grey", ls=":", lw=1, label="random")
        ax.set_ylim(0, 100)
        ax.set_title(task, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.suptitle(f"Student test accuracy (diversity {summary['diversity']})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_training_curves(task: str, curves: Mapping[tuple[str, int], Mapping[str, list]], path: str | Path) -> None:
    """Per fine-tuned method and seed (``curves[(method, seed)]``): train and validation loss by
    step, and validation accuracy if logged; one colour per method, every seed drawn."""
    plt = _pyplot()
    has_accuracy = any("eval/accuracy" in c for c in curves.values())
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(9 if has_accuracy else 5, 3.2), squeeze=False)
    loss_ax = axes[0][0]
    labelled: set[str] = set()
    for k, ((method, _seed), c) in enumerate(curves.items()):
        color = f"C{METHOD_ORDER.index(method) if method in METHOD_ORDER else k}"
        first = method not in labelled  # one legend entry per method, whatever the number of seeds
        labelled.add(method)
        for key, style in (("train/loss", "-"), ("eval/loss", "--")):
            if key in c:
                xs, ys = zip(*c[key], strict=True)
                label = f"{METHODS[method].name}: {key.split('/')[0]}" if first else None
                loss_ax.plot(xs, ys, style, color=color, lw=1, label=label)
        if has_accuracy and "eval/accuracy" in c:
            xs, ys = zip(*c["eval/accuracy"], strict=True)
            label = METHODS[method].name if first else None
            axes[0][1].plot(xs, [100 * y for y in ys], "o-", color=color, label=label)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=7)
    if has_accuracy:
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel("validation accuracy (%)")
        axes[0][1].set_ylim(0, 100)
        axes[0][1].legend(fontsize=7)
    fig.suptitle(f"Training: {task}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def interval_errors(points: Sequence[dict]) -> list[list[float]] | None:
    """Error bars (in points of percent below and above) of the points' 95% intervals, or None
    where any point has none recorded."""
    if not all(p.get("accuracy_ci_low") is not None for p in points):
        return None
    return [
        [100 * (p["accuracy"] - p["accuracy_ci_low"]) for p in points],
        [100 * (p["accuracy_ci_high"] - p["accuracy"]) for p in points],
    ]


# Swept keys drawn on a log2 axis, and axis labels longer than the key.
LOG2_AXES = ("diversity",)
AXIS_LABELS = {"diversity": "rationales per train question (diversity D)"}


def plot_sweep(record: dict, path: str | Path) -> None:
    """A recorded sweep: test accuracy (with its 95% interval) against the first swept key, a line
    per task and method (and per value of the other keys)."""
    plt = _pyplot()
    key = record["keys"][0]
    values = list(dict.fromkeys(json_key(p["values"][key]) for p in record["points"]))
    numeric = all(
        isinstance(p["values"][key], int | float) and not isinstance(p["values"][key], bool) for p in record["points"]
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    lines: dict[str, list[dict]] = {}
    for p in record["points"]:
        rest = ", ".join(f"{k}={json_key(v)}" for k, v in p["values"].items() if k != key)
        lines.setdefault(f"{p['task']} / {p['method']}" + (f" ({rest})" if rest else ""), []).append(p)
    for label, ps in sorted(lines.items()):
        xs = [p["values"][key] if numeric else values.index(json_key(p["values"][key])) for p in ps]
        ys = [100 * p["accuracy"] for p in ps]
        ax.errorbar(xs, ys, yerr=interval_errors(ps), fmt="o-", capsize=3, label=label)
    if not numeric:
        ax.set_xticks(range(len(values)), values)
    elif key in LOG2_AXES and all(v > 0 for v in (p["values"][key] for p in record["points"])):
        ax.set_xscale("log", base=2)  # D = 1, 2, 4, 8 evenly spaced, as in the paper's figure
        ticks = sorted({p["values"][key] for p in record["points"]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel(AXIS_LABELS.get(key, key))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6)
    ax.set_title(f"Sweep {record['name']}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def json_key(value: object) -> str:
    """A swept value as its axis label: ``all`` for null."""
    return "all" if value is None else value if isinstance(value, str) else json.dumps(value)
