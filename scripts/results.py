"""Named runs whose results are committed beside the default run: run one, or print its table.

    python scripts/results.py run paper-smollm2              # hours on a CPU; rerun to resume
    python scripts/results.py run paper-smollm2 --tasks coin_flip   # only these tasks
    python scripts/results.py run paper-smollm2 --commit 1a2b3c4    # stay on one commit's code
    python scripts/results.py table paper-smollm2 [--write-docs]

`run` reads results/<name>/params.yaml (every key, checked as params.yaml is) and runs the pipeline
on it one task at a time, each with `dvc repro` in a work folder of its own, .results/<name>/<task>/
(a git worktree of the commit, ignored by git and DVC, whose params are the run's with
`data.tasks: [<task>]`; every stage of the pipeline is per task, so this is the same computation as
the nine-task run, and its report stage gives the task's summary). Its DVC cache and outputs stay
there, so a second `run` reruns only what changed: a killed run resumes.

As each task finishes, its results are committed-ready in results/<name>/tasks/<task>/: summary.json
(with the run's provenance), headline.json, report.md and run.json (the commit, a digest of the
params, the machine, the wall time, the numerics mode). A task already there for the same commit
and params is not run again, so a run spread over several machines or days adds up task by task
(keep the commit with --commit). results/<name>/headline.json (a DVC metric: `dvc metrics diff`
compares it across commits) and results/<name>/summary.json gather the finished tasks.

`table` prints the paper's table for the run (from summary.json and results/paper.json, the
paper's own numbers); --write-docs puts it between the run's markers in docs/paper-results.md, the
page that shows it, and its short form (a row per task) between the README's markers for the run
(--write-readme, its earlier name, does the same).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ftcot import paths
from ftcot.config import parse_params
from ftcot.errors import FtcotError
from ftcot.io import load_yaml, read_json, read_text, write_json
from ftcot.numerics import numerics_mode
from ftcot.report.results import README_BEGIN, README_END, gather, readme_table, splice, table
from ftcot.teacher.backends import DEFAULT_REPLAY_DIR

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".results"
# What a work folder takes from the commit: the code and the pipeline's definition (its outputs
# and dvc.lock are its own).
CODE = ["ftcot", "stages", "pyproject.toml", "dvc.yaml", "tasks", DEFAULT_REPLAY_DIR, ".dvc/config", ".dvcignore"]
# What each task's work folder gives back (source in the folder: name in results/<name>/tasks/<task>/).
COPIED = {
    paths.SUMMARY: "summary.json",
    paths.HEADLINE: "headline.json",
    "report/report.md": "report.md",
}


class ResultsError(FtcotError, RuntimeError):
    """A named run that cannot be run or read."""


def git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, text=True, capture_output=True)
    if done.returncode != 0:
        raise ResultsError(f"`git {' '.join(args)}` failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def params_digest(params_file: Path) -> str:
    return hashlib.sha256(params_file.read_bytes()).hexdigest()


def task_params(params_text: str, task: str) -> str:
    """The run's params with ``data.tasks: [task]`` (comments are not kept: the run's own
    params.yaml, committed beside its results, is the documented one)."""
    params = yaml.safe_load(params_text)
    params["data"]["tasks"] = [task]
    return yaml.safe_dump(params, sort_keys=False)


def prepare(name: str, task: str, commit: str) -> Path:
    """The task's work folder at ``commit``'s code, with the run's params for the task; its outputs kept."""
    folder = WORK / name / task
    if not (folder / ".git").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", str(folder), commit)
    else:
        # HEAD moves to the commit without touching the folder's files, then the code is the commit's:
        # outputs and dvc.lock stay, so dvc reruns only what the new code changes.
        git("reset", "--soft", commit, cwd=folder)
        git("checkout", commit, "--", *[p for p in CODE if (REPO / p).exists()], cwd=folder)
        git("clean", "-fdq", "--", "ftcot", "stages", cwd=folder)
    text = (REPO / "results" / name / "params.yaml").read_text()
    (folder / "params.yaml").write_text(task_params(text, task))
    return folder


def run_params(path: Path):
    """A named run's params, as this code reads them. Checked for what is there (types, task names),
    not for completeness: the run may be pinned to a commit (--commit) whose params had fewer keys,
    and its own check stage holds the file to that commit's schema in full, first thing."""
    return parse_params(load_yaml(read_text(path)), path, complete=False)


def done_at(name: str, task: str) -> dict | None:
    """The run.json of a task already collected, if any."""
    file = REPO / "results" / name / "tasks" / task / "run.json"
    return read_json(file) if file.is_file() else None


def run(name: str, tasks: list[str] | None, at: str | None = None) -> None:
    params_file = REPO / "results" / name / "params.yaml"
    if not params_file.is_file():
        raise ResultsError(f"no {params_file.relative_to(REPO)}: a named run starts from its params file")
    params = run_params(params_file)  # checked before hours are spent
    unknown = sorted(set(tasks or ()) - set(params.data.tasks))
    if unknown:
        raise ResultsError(f"--tasks {unknown}: not in data.tasks of {params_file.relative_to(REPO)}")
    if at is None and git("status", "--porcelain", "--", *CODE):
        raise ResultsError("commit the code first: a named run records the commit that produced it")
    # --commit keeps a long run on one commit while work goes on: its stages are not rerun for
    # code that changed after it started.
    commit = git("rev-parse", "--verify", f"{at or 'HEAD'}^{{commit}}")
    digest = params_digest(params_file)
    for task in tasks or params.data.tasks:
        previous = done_at(name, task)
        if previous and (previous["commit"], previous["params_sha256"]) == (commit, digest):
            print(f"{task}: already in results/{name}/tasks/{task}/ for this commit and params", file=sys.stderr)
            continue
        run_task(name, task, commit, digest)
        gather_results(name)


def run_task(name: str, task: str, commit: str, digest: str) -> None:
    folder = prepare(name, task, commit)
    start = time.perf_counter()
    command = ["dvc", "repro"]
    print("+", " ".join(command), f"(in {folder.relative_to(REPO)})", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=folder, env=task_env(folder))
    record_time(folder, commit, time.perf_counter() - start)
    if done.returncode != 0:
        raise ResultsError(f"{task}: `{' '.join(command)}` failed (exit {done.returncode}); its message is above")
    collect(name, task, folder, commit, digest)


def task_env(folder: Path) -> dict[str, str]:
    """The environment of a task's `dvc repro`: the work folder first on PYTHONPATH, so that its
    stages import the run's commit's ftcot, not the package installed in editable mode from the
    checkout (which is this one, at whatever code it holds now)."""
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(folder) + (os.pathsep + inherited if inherited else "")}


def record_time(folder: Path, commit: str, seconds: float) -> None:
    """Wall time of this invocation, added to the runs kept in the work folder."""
    log = folder / ".wall_time.json"
    runs = json.loads(log.read_text()) if log.exists() else []
    runs.append({"commit": commit, "seconds": round(seconds, 1)})
    log.write_text(json.dumps(runs, indent=1))


def collect(name: str, task: str, folder: Path, commit: str, digest: str) -> None:
    out = REPO / "results" / name / "tasks" / task
    out.mkdir(parents=True, exist_ok=True)
    for source, dest in COPIED.items():
        shutil.copyfile(folder / source, out / dest)
    runs = json.loads((folder / ".wall_time.json").read_text())
    runs = [r for r in runs if r["commit"] == commit]
    write_json(
        out / "run.json",
        {
            "commit": commit,
            "params_sha256": digest,
            "regenerate": f"python scripts/results.py run {name} --tasks {task} --commit {commit[:12]}",
            "wall_seconds": round(sum(r["seconds"] for r in runs), 1),
            "invocations": len(runs),
            "numerics": numerics_mode(),
            "machine": machine(),
        },
    )
    print(f"wrote {out.relative_to(REPO)}/: {', '.join(COPIED.values())}, run.json", file=sys.stderr)


def gather_results(name: str) -> None:
    """results/<name>/summary.json and headline.json from the tasks collected so far."""
    out = REPO / "results" / name
    order = run_params(out / "params.yaml").data.tasks
    per_task = {
        task: (read_json(out / "tasks" / task / "summary.json"), read_json(out / "tasks" / task / "run.json"))
        for task in order
        if (out / "tasks" / task / "run.json").is_file()
    }
    summary = gather(per_task, order)
    write_json(out / "summary.json", summary)
    write_json(
        out / "headline.json", {task: read_json(out / "tasks" / task / "headline.json")[task] for task in per_task}
    )


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


# The page that shows the named runs' tables, between their markers; the README shows their short
# form where it has the run's summary markers.
RESULTS_PAGE = REPO / "docs" / "paper-results.md"
README = REPO / "README.md"


def show_table(name: str, write_docs: bool) -> None:
    summary = read_json(REPO / "results" / name / "summary.json")
    paper = read_json(REPO / "results" / "paper.json")
    block = table(summary, paper["rows"])
    if write_docs:
        RESULTS_PAGE.write_text(splice(RESULTS_PAGE.read_text(), name, block))
        print(f"{RESULTS_PAGE.relative_to(REPO)}: the table of {name} rewritten", file=sys.stderr)
        readme = README.read_text()
        if README_BEGIN.format(name=name) in readme:
            short = readme_table(summary, paper["rows"])
            README.write_text(splice(readme, name, short, (README_BEGIN, README_END)))
            print(f"{README.relative_to(REPO)}: the short table of {name} rewritten", file=sys.stderr)
    else:
        print(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run (or resume) a named run and collect its results")
    run_parser.add_argument("name")
    run_parser.add_argument("--tasks", nargs="+", help="only these tasks' stages (no collection)")
    run_parser.add_argument("--commit", help="the commit whose code runs (default: HEAD, which must be clean)")
    table_parser = sub.add_parser("table", help="print the paper's table of a named run")
    table_parser.add_argument("name")
    table_parser.add_argument(
        "--write-docs",
        "--write-readme",
        dest="write_docs",
        action="store_true",
        help="write the table between the run's markers in docs/paper-results.md instead of printing it"
        " (--write-readme: its earlier name)",
    )
    args = parser.parse_args()
    try:
        if args.command == "run":
            run(args.name, args.tasks, args.commit)
        else:
            show_table(args.name, args.write_docs)
    except FtcotError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
