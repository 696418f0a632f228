"""Benchmark of stage start-up: what each stage imports before it does anything, against a baseline
where every stage imported torch, transformers and peft (as they all once did), side by side.

    python benchmarks/startup.py            # writes metrics/bench_startup.json

For each stage script, the wall time of `python stages/<stage>.py --help` (Python, the stage's
imports, argument parsing; the median of --repeats fresh processes), and the same with
``import torch, transformers, peft`` first. A task of the paper run starts check, fetch, teach,
filter, finetune_sets and report once, finetune twice (Fine-tune-CoT, vanilla), evaluate twice and prompt
three times (zero-shot, zero-shot-CoT, few-shot-CoT): ``per_task_seconds`` weighs the stages so,
and ``speedup`` = baseline / ours for it. Only finetune, evaluate and prompt need torch; the others
must not import it (tests/test_stage_imports.py holds them to that).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ftcot.io import write_json

REPO = Path(__file__).resolve().parents[1]
STARTS_PER_TASK = {
    "check": 1,
    "fetch": 1,
    "teach": 1,
    "filter": 1,
    "finetune_sets": 1,
    "finetune": 2,
    "evaluate": 2,
    "prompt": 3,
    "report": 1,
}
HEAVY = "import torch, transformers, peft"


def start_seconds(stage: str, preload: str | None, repeats: int) -> float:
    script = REPO / "stages" / f"{stage}.py"
    run = f"sys.argv = [{str(script)!r}, '--help']; runpy.run_path({str(script)!r}, run_name='__main__')"
    code = f"{preload}; import runpy, sys; {run}"
    cmd = [sys.executable, "-c", code] if preload else [sys.executable, str(script), "--help"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "metrics" / "bench_startup.json"))
    args = parser.parse_args()
    stages = {}
    for stage in STARTS_PER_TASK:
        # Interleaved, so a machine that gets busier mid-run weighs on both alike.
        ours = start_seconds(stage, None, args.repeats)
        baseline = start_seconds(stage, HEAVY, args.repeats)
        stages[stage] = {"ours_seconds": round(ours, 2), "baseline_seconds": round(baseline, 2)}
        print(f"{stage}: {ours:.2f} s (baseline {baseline:.2f} s)")
    per_task = {
        name: round(sum(STARTS_PER_TASK[s] * stages[s][f"{name}_seconds"] for s in stages), 2)
        for name in ("ours", "baseline")
    }
    results = {
        "stages": stages,
        "starts_per_task": STARTS_PER_TASK,
        "per_task_seconds": per_task,
        "speedup": round(per_task["baseline"] / per_task["ours"], 2),
        "speedup_definition": "start-up seconds of one task's stage processes: every stage importing torch, "
        "transformers and peft / each importing what it uses",
        "machine": {
            "cores": os.cpu_count(),
            "device": "cpu",
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    write_json(args.out, results)
    print(f"per task: {per_task['ours']} s against {per_task['baseline']} s: speedup {results['speedup']}x")


if __name__ == "__main__":
    main()
