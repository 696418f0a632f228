"""The paper's accuracy-vs-diversity curve as DVC experiments (D = 1, 2, 4, 8 by default); the
report draws it beside the table. `scripts/sweep.py --set diversity=1,2,4,8` sweeps the same axis
(and any other) into metrics/sweeps/.

    python scripts/diversity_sweep.py [--values 1 2 4 8] [--jobs 1]

1. queues one experiment per D (`dvc exp run --queue -S diversity=D -n div<D>-<commit>`),
   skipping those that already exist for this commit;
2. runs the queue (`dvc exp run --run-all`), each in a temporary copy of the workspace; the
   teacher cache is shared, so the D=8 run pays only for rationales no earlier run asked for, and
   with --jobs N the experiments that run at once wait for each other's answers (the cache's
   claims) instead of paying for them twice. Ctrl-C stops the running experiments and removes the
   queued ones; the same command again reuses the finished ones;
3. reads the results back from `dvc exp show --json` into metrics/diversity.json;
4. reruns the report stage (`dvc repro report`), which draws report/diversity.png.

metrics/diversity.json records the commit and the parameters the experiments ran with (all but
`diversity` and `report`). The report shows the curve only beside a run with the same
parameters, whose own Fine-tune-CoT accuracy matches the curve's point at its D; otherwise it
says why the curve is left out. Rerun this script after changing parameters or code.

All other parameters are those of the current commit (commit params.yaml first). Compare the
experiments yourself with `dvc exp show` or `dvc metrics diff div1-<commit> div8-<commit>`.
"""

import argparse
import sys

from ftcot import paths
from ftcot.config import load_params
from ftcot.io import write_json
from ftcot.report.experiments import dvc, exp_show, head_commit, jobs_arg, run_experiments, run_script
from ftcot.report.sweep import diversity_points, sweep_fingerprint

OUT = paths.DIVERSITY_SWEEP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, nargs="+", default=[1, 2, 4, 8], help="diversities D to run")
    parser.add_argument("--jobs", type=jobs_arg, default=1, help="experiments run at once (at least 1)")
    parser.add_argument("--collect-only", action="store_true", help="only read back finished experiments")
    args = parser.parse_args()
    if any(d < 1 for d in args.values):
        sys.exit(f"error: --values must be positive integers, got {args.values}")

    params = load_params()  # a broken params.yaml stops here, before any experiment is queued
    commit = head_commit()
    names = {d: f"div{d}-{commit}" for d in sorted(set(args.values))}
    if not args.collect_only:
        run_experiments({name: ["-S", f"diversity={d}"] for d, name in names.items()}, args.jobs)
    points = diversity_points(exp_show(), names, params.data.tasks)
    # Provenance: the report shows these points only beside a run with the same parameters.
    record = {
        "commit": commit,
        "params": sweep_fingerprint(params.model_dump(mode="json")),
        "regenerate": "python scripts/diversity_sweep.py --values " + " ".join(str(d) for d in names),
        "points": points,
    }
    write_json(OUT, record)
    print(f"wrote {OUT}: {len(points)} points", file=sys.stderr)
    dvc("repro", "report")


if __name__ == "__main__":
    run_script(main)
