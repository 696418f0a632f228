"""A sweep of any parameters as DVC experiments: the paper's figures (accuracy against diversity,
dataset size, student size, teacher) and its ablations, each one command.

    python scripts/sweep.py --set diversity=1,2,4,8
    python scripts/sweep.py --set data.max_train=50,100,all --name dataset-size
    python scripts/sweep.py --set filter.keep=correct,all --jobs 2
    python scripts/sweep.py --set student.model=tiny-llama,smollm2-135m --set student.tuning=full

1. every combination of the --set values (`all` / `null` means null, e.g. no cap) is checked
   against params.yaml's schema, then queued as one experiment
   (`dvc exp run --queue -S key=value ... -n <name>-<values>-<commit>`), skipping those that
   already exist for this commit;
2. the queue runs (`dvc exp run --run-all --jobs N`), each experiment in a temporary copy of the
   workspace. They share the teacher cache: answers already paid for are never asked again, and
   experiments that run at once wait for each other's answers rather than pay twice. Ctrl-C (or
   SIGTERM) stops the sweep's running experiments and removes its queued ones (the queue's workers
   would otherwise go on, and pay, in the background), then says in one line what finished: the
   same command again reuses every finished point;
3. the results are read back from `dvc exp show --json` into metrics/sweeps/<name>.json: per task,
   method (each fine-tuned student, and the teacher) and point, the accuracy and its interval;
4. `dvc repro report` draws report/sweep_<name>.png: accuracy against the first swept key.

metrics/sweeps/<name>.json records the commit, the parameters the experiments ran with (all but
the swept keys and `report`) and the command that regenerates it; the report shows a sweep only
beside a run with the same parameters, and says why it leaves one out.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from ftcot import paths
from ftcot.config import ConfigError, leaf_keys, load_params, parse_params
from ftcot.experiments import dvc, exp_show, head_commit, jobs_arg, run_experiments, run_script
from ftcot.io import load_yaml, read_text, write_json
from ftcot.report.sweep import (
    SweepError,
    grid_points,
    parse_grid,
    point_slug,
    set_args,
    sweep_fingerprint,
    sweep_points,
)


def _with(raw: dict, point: dict) -> dict:
    """params.yaml's mapping with a point's values set (dotted keys)."""
    raw = json.loads(json.dumps(raw))
    for key, value in point.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2", help="a swept parameter")
    parser.add_argument("--name", help="the sweep's name (default: the swept keys)")
    parser.add_argument("--jobs", type=jobs_arg, default=1, help="experiments run at once (at least 1)")
    parser.add_argument("--collect-only", action="store_true", help="only read back finished experiments")
    args = parser.parse_args()

    params = load_params()  # a broken params.yaml stops here, before any experiment is queued
    grid = parse_grid(args.set, leaf_keys())
    name = args.name or "+".join(grid)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise SweepError(f"--name {name!r}: letters, digits, '.', '_', '+' and '-' only")
    raw = load_yaml(read_text("params.yaml"))
    points = grid_points(grid)
    for point in points:  # every point is a valid configuration, before hours are spent on the first
        try:
            parse_params(_with(raw, point))
        except ConfigError as err:
            raise SweepError(f"the point {point} is not a valid configuration:\n{err}") from None
    commit = head_commit()
    stem = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")
    names = {f"{stem}-{point_slug(p)}-{commit}": p for p in points}
    if not args.collect_only:
        run_experiments({exp: set_args(p) for exp, p in names.items()}, args.jobs)
    found = sweep_points(exp_show(), names, params.data.tasks)
    out = Path(paths.SWEEPS) / f"{name}.json"
    record = {
        "name": name,
        "keys": list(grid),
        "commit": commit,
        "params": sweep_fingerprint(params.model_dump(mode="json"), tuple(grid)),
        "regenerate": "python scripts/sweep.py " + " ".join(f"--set {s}" for s in args.set) + f" --name {name}",
        "points": found,
    }
    write_json(out, record)
    print(f"wrote {out}: {len(found)} points", file=sys.stderr)
    dvc("repro", "report")


if __name__ == "__main__":
    run_script(main)
