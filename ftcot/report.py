"""The paper-style summary: metrics/summary.json, report.md, report.html and the PNG figures.

Pure functions of the stage outputs (no clock, no paths of this machine), so the same inputs give
byte-identical files.
"""

from __future__ import annotations

import base64
import html
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from ftcot.methods import METHODS, get_method

# Chance accuracy of a uniform guess, by answer type (open answers: none).
RANDOM_CHANCE = {
    "choice_A-E": 1 / 5,
    "choice_A-F": 1 / 6,
    "choice_A-C": 1 / 3,
    "yes_no": 1 / 2,
    "number": 0.0,
    "letters": 0.0,
}
# Table order: the paper's Table 1, top to bottom.
METHOD_ORDER = ("zero_shot", "zero_shot_cot", "few_shot_cot", "vanilla", "ft_cot")
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


class ReportError(ValueError):
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
            "random": round(RANDOM_CHANCE[answer_types[task]], 6),
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


def seeds_table(summary: dict) -> list[str]:
    """Each fine-tuned student's accuracy seed by seed (when there are several seeds)."""
    lines = []
    for task, row in summary["tasks"].items():
        for method in METHOD_ORDER:
            m = row.get(method, {})
            if m.get("num_seeds", 1) < 2:
                continue
            if not lines:
                lines = ["| Task | Method | " + " | ".join(f"seed {s}" for s in m["seeds"]) + " |"]
                lines.append("|---|---|" + "---:|" * len(m["seeds"]))
            cells = " | ".join(_cell(v) for v in m["seeds"].values())
            lines.append(f"| {task} | {get_method(method).name} | {cells} |")
    return lines


def provenance_lines(run: dict) -> list[str]:
    """The report's account of what produced it (``ftcot.provenance.run_metadata``)."""
    code = run["code"]
    if code["commit"] is None:
        commit = "no git repository"
    else:
        commit = f"git commit `{code['commit'][:12]}`" + (
            " with uncommitted changes to the code" if code["code_changed"] else ""
        )
    packages = ", ".join(f"{k} {v}" for k, v in run["packages"].items() if v is not None)
    teacher = ", ".join(f"{k} {v}" for k, v in run["teacher"].items())
    return [
        f"- Code: {commit}; digest of `ftcot/`, `stages/`, `pyproject.toml`: `{code['digest'][:16]}`.",
        f"- Teacher: {teacher}.",
        f"- Student seeds: {', '.join(map(str, run['seeds']))}; data seed {run['params']['seed']}.",
        f"- Devices: {'; '.join(run['devices']) or 'none recorded'}.",
        f"- Packages: {packages}.",
        "- Parameters: every resolved value is in `metrics/summary.json` under `run.params`.",
    ]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _cell(m: dict, parse_rate: bool = False) -> str:
    cell = f"{_pct(m['accuracy'])} ({_pct(m['accuracy_ci_low'])}–{_pct(m['accuracy_ci_high'])})"
    if m.get("accuracy_sd") is not None:
        cell += f" ± {_pct(m['accuracy_sd'])} sd"
    # A vote over unparseable samples is no answer: a low accuracy may only mean that.
    return cell + (f", {_pct(m['parse_rate'])} of votes parsed" if parse_rate else "")


def method_label(method: str, summary: dict) -> str:
    label = get_method(method).name
    if method == "ft_cot" and summary["diversity"] > 1:
        label += f", diverse reasoning (D={summary['diversity']})"
    return f"Student: {label}"


def main_table(summary: dict) -> list[str]:
    """Rows = methods, columns = tasks, accuracy in % with its 95% interval (the paper's Table 1)."""
    tasks = list(summary["tasks"])
    rows = summary["tasks"]
    lines = ["| Method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    lines.append("| Random | " + " | ".join(_pct(rows[t]["random"]) for t in tasks) + " |")
    if any(rows[t]["teacher"]["test_accuracy"] is not None for t in tasks):
        cells = " | ".join(_pct(rows[t]["teacher"]["test_accuracy"]) for t in tasks)
        lines.append(f"| Teacher ({summary['teacher']}): Zero-shot-CoT | {cells} |")
    for method in METHOD_ORDER:
        if not any(method in rows[t] for t in tasks):
            continue
        cells = " | ".join(_cell(rows[t][method]) if method in rows[t] else "–" for t in tasks)
        lines.append(f"| {method_label(method, summary)} | {cells} |")
        if any("self_consistency" in rows[t].get(method, {}) for t in tasks):
            k = next(rows[t][method]["self_consistency"]["samples"] for t in tasks if method in rows[t])
            cells = " | ".join(
                _cell(rows[t][method]["self_consistency"], parse_rate=True) if method in rows[t] else "–" for t in tasks
            )
            lines.append(f"| {method_label(method, summary)} + self-consistency ({k} samples) | {cells} |")
    return lines


def detail_table(summary: dict) -> list[str]:
    """Strict vs flexible scoring: did the student learn the format or only the answer?"""
    lines = [
        "| Task | Method | Strict | Flexible | Contains answer | Parse rate | Mean generated tokens | Truncated |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, row in summary["tasks"].items():
        for method in METHOD_ORDER:
            if method in row:
                m = row[method]
                lines.append(
                    f"| {task} | {get_method(method).name} | {_pct(m['accuracy'])} | {_pct(m['flexible_accuracy'])} "
                    f"| {_pct(m['contains_answer'])} | {_pct(m['parse_rate'])} | {m['mean_generated_tokens']:.1f} "
                    f"| {m['truncated']}/{m['n'] * m.get('num_seeds', 1)} |"
                )
    return lines


def teacher_table(summary: dict) -> list[str]:
    lines = [
        "| Task | Train accuracy (sample 0) | Rationales | Kept | Kept rate | Questions covered "
        "| Tokens (prompt + completion) | Cost (USD) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, row in summary["tasks"].items():
        t = row["teacher"]
        tokens = "–" if t["prompt_tokens"] is None else f"{t['prompt_tokens']:,} + {t['completion_tokens']:,}"
        cost = "–" if t["cost_usd"] is None else f"{t['cost_usd']:.4f}"
        lines.append(
            f"| {task} | {_pct(t['train_accuracy'])} | {t['rationales']} | {t['kept']} | {_pct(t['kept_rate'])} "
            f"| {_pct(t['question_coverage'])} | {tokens} | {cost} |"
        )
    return lines


def _quote(text: str) -> str:
    return " ".join(str(text).split()) or "(empty)"


# What a run with the offline stand-in teacher can and cannot say, stated where its numbers are.
ORACLE_CAVEAT = (
    "*The teacher here is the `oracle` backend, a program that writes correct rationales except for a "
    "seeded share with a wrong step; it is not a language model. The table shows what the method does "
    "with filtered rationales on these synthetic tasks (Fine-tune-CoT against vanilla fine-tuning, the "
    "effect of diversity), not how well any real LLM teaches or how a pretrained student reasons.*"
)


def _seeds_sentence(summary: dict) -> str:
    seeds = summary.get("seeds", [0])
    if len(seeds) < 2:
        return f" One student per method (seed {seeds[0]}; params `seeds` trains several)."
    return (
        f" Fine-tuned students: mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}), the interval "
        "of all their test answers pooled, and ± the sd over seeds."
    )


def render_markdown(
    summary: dict,
    teacher_samples: Mapping[str, Mapping[str, Sequence[dict]]],
    student_samples: Mapping[str, Mapping[str, Sequence[dict]]],
    figures: Mapping[str, str],
    diversity_points: Sequence[dict] = (),
    sweep_note: str | None = None,
) -> str:
    """``teacher_samples[task]['kept'|'dropped']``: judged teacher rationales;
    ``student_samples[task]['correct'|'wrong']``: Fine-tune-CoT predictions; ``figures``:
    {'accuracy': file, 'curves/<task>': file, 'diversity': file}."""
    lines = [
        "# Fine-tune-CoT report",
        "",
        f"Teacher: {summary['teacher']}. Student: {summary['student']}. Diversity (rationales per train "
        f"question): {summary['diversity']}. Test accuracy in %, with its 95% (Wilson) interval; strict "
        "scoring (the answer after `-->` for Fine-tune-CoT, the completion for vanilla fine-tuning)."
        + _seeds_sentence(summary),
        "",
        *main_table(summary),
    ]
    if summary.get("run", {}).get("teacher", {}).get("backend") == "oracle":
        lines += ["", ORACLE_CAVEAT]
    if seeds_table(summary):
        lines += ["", "Seed by seed:", "", *seeds_table(summary)]
    if "accuracy" in figures:
        lines += ["", f"![Test accuracy per task]({figures['accuracy']})"]
    lines += ["", "## Strict and flexible scoring", ""]
    lines += [
        "Strict reads the answer where the method's format puts it; flexible takes the last answer-like "
        "span anywhere in the output; contains answer: the gold answer is among those spans.",
        "",
        *detail_table(summary),
        "",
        "## Teacher",
        "",
        *teacher_table(summary),
    ]
    lines += ["", "## Accuracy and diversity", ""]
    if diversity_points:
        experiments = ", ".join(sorted({p["experiment"] for p in diversity_points}))
        lines += [
            "Fine-tune-CoT test accuracy against the number of teacher rationales per train question "
            f"(`scripts/diversity_sweep.py`; experiments {experiments}).",
            "",
            "| Task | D | Kept rationales | Fine-tune-CoT accuracy (95% interval) |",
            "|---|---:|---:|---:|",
        ]
        for p in diversity_points:
            cell = _pct(p["accuracy"])
            if p.get("accuracy_ci_low") is not None:
                cell += f" ({_pct(p['accuracy_ci_low'])}–{_pct(p['accuracy_ci_high'])})"
            lines.append(f"| {p['task']} | {p['diversity']} | {p['kept']} | {cell} |")
        if "diversity" in figures:
            lines += ["", f"![Accuracy against diversity]({figures['diversity']})"]
    elif sweep_note:
        lines.append(sweep_note)
    else:
        lines.append("No sweep recorded yet: `python scripts/diversity_sweep.py` runs D = 1, 2, 4, 8.")
    if "run" in summary:
        lines += ["", "## What produced this report", "", *provenance_lines(summary["run"])]
    curves = [(k.split("/", 1)[1], v) for k, v in figures.items() if k.startswith("curves/")]
    if curves:
        lines += ["", "## Training curves", ""]
        for task, name in curves:
            lines += [f"![Training curves: {task}]({name})", ""]
    for task, groups in teacher_samples.items():
        lines += ["", f"## Teacher rationales: {task}"]
        for group, title in (("kept", "kept (right answer)"), ("dropped", "dropped (wrong answer)")):
            for r in groups.get(group, []):
                lines += [
                    "",
                    f"*{title}* **Q:** {_quote(r['question'])}",
                    "",
                    f"> {_quote(r['rationale'])} → teacher: {r['prediction']}, gold: {r['answer']}",
                ]
    for task, groups in student_samples.items():
        lines += ["", f"## Fine-tune-CoT student on test questions: {task}"]
        for group in ("correct", "wrong"):
            for p in groups.get(group, []):
                lines += [
                    "",
                    f"*{group}* **Q:** {_quote(p['question'])}",
                    "",
                    f"> {_quote(p['generated'])} → parsed: {p['prediction']}, gold: {p['answer']}",
                ]
    return "\n".join(lines).rstrip() + "\n"


def render_html(markdown: str, image_dir: Path, title: str = "Fine-tune-CoT report") -> str:
    """report.md as one self-contained HTML page: the PNGs inlined as data URIs, no script, no
    external stylesheet, so it opens offline and can be mailed as one file."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def inline(match: re.Match) -> str:
        data = base64.b64encode((image_dir / html.unescape(match.group(1))).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^":]+\.png)"', inline, body)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem}"
        "td{text-align:right}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}"
        "blockquote{color:#333;border-left:3px solid #ccc;margin-left:0;padding-left:1rem}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{style}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


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


def read_curve(tsv: Path) -> list[tuple[float, float]]:
    """A DVCLive step/value TSV as (step, value) pairs."""
    lines = tsv.read_text().splitlines()[1:]
    return [(float(a), float(b)) for a, b in (line.split("\t")[:2] for line in lines if line)]


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


def plot_diversity(points: Sequence[dict], path: str | Path) -> None:
    """Fine-tune-CoT accuracy against diversity D (log2 axis), a line per task, each point with its
    95% interval when recorded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for task in sorted({p["task"] for p in points}):
        ps = sorted((p for p in points if p["task"] == task), key=lambda p: p["diversity"])
        ys = [100 * p["accuracy"] for p in ps]
        errors = None
        if all(p.get("accuracy_ci_low") is not None for p in ps):
            errors = [
                [100 * (p["accuracy"] - p["accuracy_ci_low"]) for p in ps],
                [100 * (p["accuracy_ci_high"] - p["accuracy"]) for p in ps],
            ]
        ax.errorbar([p["diversity"] for p in ps], ys, yerr=errors, fmt="o-", capsize=3, label=task)
    ax.set_xscale("log", base=2)
    ds = sorted({p["diversity"] for p in points})
    ax.set_xticks(ds, [str(d) for d in ds])
    ax.set_xlabel("rationales per train question (D)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title("Fine-tune-CoT: diverse reasoning", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
