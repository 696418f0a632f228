"""Stage report: the summary table (metrics/summary.json), report.md and its plot.

    python stages/report.py --teach-metrics metrics/teach --filter-metrics metrics/filter \
        --eval-metrics metrics/evaluate \
        --kept data/filter --predictions data/evaluate --summary metrics/summary.json --out-dir report

For every task in data.tasks, reads <teach-metrics>/<task>.json, <filter-metrics>/<task>.json,
<eval-metrics>/<task>/<variant>.json, <kept>/<task>.jsonl and <predictions>/<task>/ft_cot.jsonl.
"""

import argparse
from pathlib import Path

from ftcot.config import load_params
from ftcot.formats import VARIANTS
from ftcot.io import read_json, read_jsonl, write_json
from ftcot.report import build_summary, plot_accuracy, render_markdown
from ftcot.stage import run_stage

PLOT_NAME = "accuracy.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teach-metrics", required=True, type=Path)
    parser.add_argument("--filter-metrics", required=True, type=Path)
    parser.add_argument("--eval-metrics", required=True, type=Path)
    parser.add_argument("--kept", required=True, type=Path)
    parser.add_argument("--predictions", required=True, type=Path)
    parser.add_argument("--summary", required=True)
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args()

    params = load_params()
    tasks = params.data.tasks
    teach_metrics = {t: read_json(args.teach_metrics / f"{t}.json") for t in tasks}
    filter_metrics = {t: read_json(args.filter_metrics / f"{t}.json") for t in tasks}
    eval_metrics = {t: {v: read_json(args.eval_metrics / t / f"{v}.json") for v in VARIANTS} for t in tasks}
    samples = {t: read_jsonl(args.kept / f"{t}.jsonl")[: params.report.num_samples] for t in tasks}
    student_samples = {t: read_jsonl(args.predictions / t / "ft_cot.jsonl")[: params.report.num_samples] for t in tasks}

    summary = build_summary(tasks, filter_metrics, eval_metrics, params.diversity, teach_metrics)
    write_json(args.summary, summary)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_accuracy(summary, args.out_dir / PLOT_NAME)
    (args.out_dir / "report.md").write_text(render_markdown(summary, samples, PLOT_NAME, student_samples))


if __name__ == "__main__":
    run_stage(main)
