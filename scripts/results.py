"""Named runs whose results are committed beside the default run: run one, or print its table.

    python scripts/results.py run paper-smollm2              # hours on a CPU; rerun to resume
    python scripts/results.py run paper-smollm2 --tasks coin_flip   # task by task, if you like
    python scripts/results.py table paper-smollm2 [--write-readme]

`run` reads results/<name>/params.yaml (every key, checked as params.yaml is), and runs the whole
pipeline on it with `dvc repro` in a work folder of its own, .results/<name>/ (a git worktree of the
current commit, ignored by git and DVC; its DVC cache and outputs stay there, so a second `run`
reruns only what changed: a killed run resumes, and after a code change only the stages that
depend on it rerun). With --tasks, only those tasks' stages run (the report waits for all of
them). When every stage is done, it copies back into results/<name>/: headline.json (a DVC
metric: `dvc metrics diff` compares it across commits), summary.json (with the run's provenance),
report/ and run.json (the commit, the machine, the wall time of the runs that made it, the
numerics mode and this command).

`table` prints the paper's table for the run (from summary.json and results/paper.json, the
paper's own numbers); --write-readme puts it between the run's markers in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ftcot.config import load_params
from ftcot.errors import FtcotError
from ftcot.io import read_json, write_json
from ftcot.numerics import numerics_mode
from ftcot.report.results import splice, table

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".results"
# What the work folder takes from the commit: the code and the pipeline's definition (its outputs
# and dvc.lock are its own).
CODE = ["ftcot", "stages", "pyproject.toml", "dvc.yaml", "tasks", "replay", ".dvc/config", ".dvcignore"]
COPIED = {"metrics/headline.json": "headline.json", "metrics/summary.json": "summary.json", "report": "report"}


class ResultsError(FtcotError, RuntimeError):
    """A named run that cannot be run or read."""


def git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, text=True, capture_output=True)
    if done.returncode != 0:
        raise ResultsError(f"`git {' '.join(args)}` failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def prepare(name: str, commit: str) -> Path:
    """The run's work folder at ``commit``'s code, with the run's params; its outputs kept."""
    folder = WORK / name
    if not (folder / ".git").exists():
        WORK.mkdir(exist_ok=True)
        git("worktree", "add", "--detach", str(folder), commit)
    else:
        # HEAD moves to the commit without touching the folder's files, then the code is the commit's:
        # outputs and dvc.lock stay, so dvc reruns only what the new code changes.
        git("reset", "--soft", commit, cwd=folder)
        git("checkout", commit, "--", *[p for p in CODE if (REPO / p).exists()], cwd=folder)
        git("clean", "-fdq", "--", "ftcot", "stages", cwd=folder)
    shutil.copyfile(REPO / "results" / name / "params.yaml", folder / "params.yaml")
    return folder


def run(name: str, tasks: list[str] | None) -> None:
    params_file = REPO / "results" / name / "params.yaml"
    if not params_file.is_file():
        raise ResultsError(f"no {params_file.relative_to(REPO)}: a named run starts from its params file")
    params = load_params(params_file)  # checked before hours are spent
    unknown = sorted(set(tasks or ()) - set(params.data.tasks))
    if unknown:
        raise ResultsError(f"--tasks {unknown}: not in data.tasks of {params_file.relative_to(REPO)}")
    if git("status", "--porcelain", "--", *CODE):
        raise ResultsError("commit the code first: a named run records the commit that produced it")
    commit = git("rev-parse", "HEAD")
    folder = prepare(name, commit)
    start = time.perf_counter()
    targets = [t for task in tasks for t in (f"evaluate@{task}-*", f"prompt@{task}-*")] if tasks else []
    command = ["dvc", "repro", *(["--glob", *targets] if targets else [])]
    print("+", " ".join(command), f"(in {folder.relative_to(REPO)})", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=folder)
    seconds = time.perf_counter() - start
    record_time(name, commit, seconds)
    if done.returncode != 0:
        raise ResultsError(f"`{' '.join(command)}` failed (exit {done.returncode}); its message is above")
    if not tasks:
        collect(name, folder, commit)


def record_time(name: str, commit: str, seconds: float) -> None:
    """Wall time of this invocation, added to the runs kept in the work folder."""
    log = WORK / name / ".wall_time.json"
    runs = json.loads(log.read_text()) if log.exists() else []
    runs.append({"commit": commit, "seconds": round(seconds, 1)})
    log.write_text(json.dumps(runs, indent=1))


def collect(name: str, folder: Path, commit: str) -> None:
    out = REPO / "results" / name
    for source, dest in COPIED.items():
        target = out / dest
        if target.is_dir():
            shutil.rmtree(target)
        if (folder / source).is_dir():
            shutil.copytree(folder / source, target)
        else:
            shutil.copyfile(folder / source, target)
    runs = json.loads((folder / ".wall_time.json").read_text())
    write_json(
        out / "run.json",
        {
            "commit": commit,
            "regenerate": f"python scripts/results.py run {name}",
            "wall_seconds": round(sum(r["seconds"] for r in runs), 1),
            "invocations": len(runs),
            "numerics": numerics_mode(),
            "machine": machine(),
        },
    )
    print(f"wrote {out.relative_to(REPO)}/: headline.json, summary.json, report/, run.json", file=sys.stderr)


def machine() -> dict:
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")), None
    )
    return {"cores": os.cpu_count(), "cpu": model, "device": "cpu", "platform": platform.machine()}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def show_table(name: str, write_readme: bool) -> None:
    summary = read_json(REPO / "results" / name / "summary.json")
    paper = read_json(REPO / "results" / "paper.json")
    block = table(summary, paper["rows"])
    if write_readme:
        readme = REPO / "README.md"
        readme.write_text(splice(readme.read_text(), name, block))
        print(f"README.md: the table of {name} rewritten", file=sys.stderr)
    else:
        print(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run (or resume) a named run and collect its results")
    run_parser.add_argument("name")
    run_parser.add_argument("--tasks", nargs="+", help="only these tasks' stages (no collection)")
    table_parser = sub.add_parser("table", help="print the paper's table of a named run")
    table_parser.add_argument("name")
    table_parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    try:
        if args.command == "run":
            run(args.name, args.tasks)
        else:
            show_table(args.name, args.write_readme)
    except FtcotError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
