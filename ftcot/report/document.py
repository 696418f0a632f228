"""The report as documents: report.md (the paper's table, intervals, samples, what produced the run)
and report.html (self-contained, its images inline). Pure functions of the summary, no clock."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ftcot.methods import FT_COT, get_method
from ftcot.report.summary import METHOD_ORDER
from ftcot.teacher.backends import ORACLE


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
    if method == FT_COT and summary["diversity"] > 1:
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


def truncation_flags(summary: dict) -> list[str]:
    """A warning under the main table for each method whose completions mostly ran into
    evaluate.max_new_tokens (its accuracy then measures the limit more than the student)."""
    from ftcot.evaluation.scoring import TRUNCATION_WARNING_SHARE

    flags = []
    for task, row in summary["tasks"].items():
        for method in METHOD_ORDER:
            m = row.get(method)
            if m and "truncated" in m:
                n = m["n"] * m.get("num_seeds", 1)
                if n and m["truncated"] / n >= TRUNCATION_WARNING_SHARE:
                    flags.append(
                        f"- **Warning:** {task}, {get_method(method).name}: {m['truncated']} of {n} completions "
                        "were cut at `evaluate.max_new_tokens` before their answer; raise it."
                    )
    return ["", *flags] if flags else []


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
    sweeps: Sequence[dict] = (),
) -> str:
    """``teacher_samples[task]['kept'|'dropped']``: judged teacher rationales;
    ``student_samples[task]['correct'|'wrong']``: Fine-tune-CoT predictions; ``figures``:
    {'accuracy': file, 'curves/<task>': file, 'sweep/<name>': file};
    ``sweeps``: the recorded sweeps of scripts/sweep.py, each with a ``note`` when left out."""
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
    if summary.get("run", {}).get("teacher", {}).get("backend") == ORACLE:
        lines += ["", ORACLE_CAVEAT]
    lines += truncation_flags(summary)
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
    lines += ["", "## Sweeps", ""]
    if not sweeps:
        lines += [
            "No sweep recorded yet: `python scripts/sweep.py --set diversity=1,2,4,8` draws the paper's "
            "accuracy against diversity here, and any other parameter the same way.",
        ]
    for sweep in sweeps:
        lines += [f"### {sweep['name']}", ""]
        if sweep.get("note"):
            lines += [sweep["note"], ""]
            continue
        keys = sweep["keys"]
        lines += [
            f"Swept: {', '.join(f'`{k}`' for k in keys)} (`{sweep['regenerate']}`, commit {sweep['commit']}).",
            "",
            "| Task | Method | " + " | ".join(keys) + " | Accuracy |",
            "|---|---|" + "---|" * len(keys) + "---|",
        ]
        for p in sweep["points"]:
            cell = _pct(p["accuracy"])
            if p.get("accuracy_ci_low") is not None:
                cell += f" [{_pct(p['accuracy_ci_low'])}, {_pct(p['accuracy_ci_high'])}]"
            shown = " | ".join("all" if p["values"][k] is None else str(p["values"][k]) for k in keys)
            label = "Teacher (zero-shot-CoT)" if p["method"] == "teacher" else method_label(p["method"], summary)
            lines.append(f"| {p['task']} | {label} | {shown} | {cell} |")
        if f"sweep/{sweep['name']}" in figures:
            lines += ["", f"![Sweep {sweep['name']}]({figures['sweep/' + sweep['name']]})"]
        lines.append("")
    if "run" in summary:
        lines += ["", "## What produced this report", "", *provenance_lines(summary["run"])]
    curves = [(k.split("/", 1)[1], v) for k, v in figures.items() if k.startswith("curves/")]
    if curves:
        lines += ["", "## Training curves", ""]
        for task, name in curves:
            lines += [f"![Training curves: {task}]({name})", ""]
    for task, groups in teacher_samples.items():
        lines += ["", f"## Teacher rationales: {task}"]
        for group, title in (("kept", "kept by the filter"), ("dropped", "dropped by the filter")):
            for r in groups.get(group, []):
                verdict = "right" if r["correct"] else "wrong"
                lines += [
                    "",
                    f"*{title}, {verdict} answer* **Q:** {_quote(r['question'])}",
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
