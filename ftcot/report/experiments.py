"""Running queued DVC experiments from the sweep scripts: the one place that calls ``dvc`` and
``git`` for them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from ftcot.errors import FtcotError


def dvc(*args: str, capture: bool = False) -> str:
    print("+ dvc", " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(["dvc", *args], check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def head_commit() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], text=True, capture_output=True)
    if commit.returncode != 0:
        raise RuntimeError("run this in the project's git repository, with params.yaml committed: no commit found")
    return commit.stdout.strip()


def run_experiments(experiments: Mapping[str, Sequence[str]], jobs: int) -> list[str]:
    """Queues the experiments (``{name: dvc exp run -S arguments}``) that do not exist yet and runs
    the queue, ``jobs`` at a time; returns the names queued. Experiments that run at once share the
    teacher cache and wait for each other's answers rather than pay twice."""
    existing = set(dvc("exp", "ls", "--name-only", capture=True).split())
    queued = [name for name in experiments if name not in existing]
    for name in queued:
        dvc("exp", "run", "--queue", *experiments[name], "-n", name)
    if queued:
        dvc("exp", "run", "--run-all", "--jobs", str(jobs))
    return queued


def exp_show() -> list:
    return json.loads(dvc("exp", "show", "--json", capture=True))


def run_script(main: Callable[[], None]) -> None:
    """Runs a sweep script's ``main``: what the user can fix (a failed dvc command, whose own message
    is above; a bad params.yaml or --set; a failed experiment) ends in one line, without a traceback."""
    try:
        main()
    except subprocess.CalledProcessError as err:
        sys.exit(f"error: `{' '.join(err.cmd)}` failed (exit {err.returncode}); its own message is above")
    except (RuntimeError, FtcotError, json.JSONDecodeError) as err:
        sys.exit(f"error: {err}")
