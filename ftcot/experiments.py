"""Running queued DVC experiments from the sweep scripts: the one place that calls ``dvc`` and
``git`` for them, and that stops them when the sweep is interrupted."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

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


def jobs_arg(text: str) -> int:
    """argparse type of --jobs: DVC starts no queue worker for 0 and `--run-all` then waits for one forever."""
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of experiments run at once, got {text!r}") from None
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"at least 1 experiment runs at once, got {jobs}")
    return jobs


class SweepInterrupted(Exception):
    """The sweep was interrupted; ``summary`` (one line) says what finished and what was stopped."""

    def __init__(self, summary: str, signum: int):
        super().__init__(summary)
        self.signum = signum


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (the experiments are stopped), but with its own exit status."""

    signum = signal.SIGTERM


def run_experiments(experiments: Mapping[str, Sequence[str]], jobs: int) -> list[str]:
    """Queues the experiments (``{name: dvc exp run -S arguments}``) that do not exist yet and runs
    the queue, ``jobs`` at a time; returns the names queued. Experiments that run at once share the
    teacher cache and wait for each other's answers rather than pay twice.

    Interrupted (Ctrl-C, SIGTERM), it stops what it started (``stop_experiments``) and raises
    SweepInterrupted: the queue's workers run on their own, and would otherwise go on paying."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    existing = set(dvc("exp", "ls", "--name-only", capture=True).split())
    queued = [name for name in experiments if name not in existing]
    try:
        for name in queued:
            dvc("exp", "run", "--queue", *experiments[name], "-n", name)
        if queued:
            _run_queue(jobs)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        with _signals_ignored():
            summary = stop_experiments(list(experiments))
        raise SweepInterrupted(summary, signum) from None
    return queued


def _run_queue(jobs: int) -> None:
    # In a process group of its own: a Ctrl-C at the terminal reaches the sweep alone, which stops the experiments;
    # dvc's follower would print that they go on in the background (it is killed without a word instead).
    args = ["exp", "run", "--run-all", "--jobs", str(jobs)]
    print("+ dvc", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(["dvc", *args], check=True, process_group=0)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Another Ctrl-C (or SIGTERM) while the experiments are being stopped would leave them half stopped: ignored,
    and by the dvc commands too, which inherit the disposition; every step has a time limit instead."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---- stopping a sweep's experiments ---------------------------------------------------------------------------------

DVC_TIMEOUT_S = 30.0  # one `dvc queue ...` command
KILL_GRACE_S = 20.0  # an interrupted experiment's stage ends within seconds; after this, SIGKILL (`--force`)
STOP_DEADLINE_S = 60.0  # all of it: then the line says what is left, and the command that stops it
RERUN = "run the same command again to finish: it reuses every finished point"
POLL_S = 0.5  # between reads of the queue, each of which takes a second or more
STATUSES = ("Running", "Queued", "Failed", "Success", "Unknown")


@dataclass(frozen=True)
class Task:
    """A row of `dvc queue status`."""

    rev: str  # the task's short stash revision: `dvc queue kill/remove` take it, and it is unique where names repeat
    name: str
    status: str


def workers_alive(queue_status: str) -> bool:
    """Whether `dvc queue status` counts a worker, active or idle (True when it does not say)."""
    counts = re.search(r"Worker status: (\d+) active, (\d+) idle", queue_status)
    return counts is None or counts.group(1, 2) != ("0", "0")


def parse_queue_status(text: str) -> list[Task]:
    """The tasks of `dvc queue status` (DVC 3.x: a plain table Task, Name, Created, Status; Created holds spaces)."""
    tasks = []
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 3 and re.fullmatch(r"[0-9a-f]{7,40}", cells[0]) and cells[-1] in STATUSES:
            tasks.append(Task(cells[0], cells[1], cells[-1]))
    return tasks


def _quiet(*args: str) -> tuple[bool, str]:
    """A dvc command whose output only the sweep reads: whether it succeeded, and its output (a failed `dvc queue
    kill` may still have killed some of its tasks, and says which)."""
    try:
        done = subprocess.run(["dvc", *args], text=True, capture_output=True, timeout=DVC_TIMEOUT_S)
    except (subprocess.TimeoutExpired, OSError):
        return False, ""
    return done.returncode == 0, done.stdout


def _queue_status() -> str | None:
    ok, out = _quiet("queue", "status")
    return out if ok else None


@dataclass
class _Stopping:
    """What stop_experiments did and what is left."""

    killed: dict[str, str] = field(default_factory=dict)  # rev -> name
    forced: bool = False
    removed: dict[str, str] = field(default_factory=dict)
    left: list[Task] = field(default_factory=list)  # still queued or running at the deadline
    tasks: list[Task] = field(default_factory=list)  # the whole queue, as last read
    workers: bool = True  # whether that read counted a worker
    unreadable: bool = False  # `dvc queue status` failed: nothing is known


def _stop_tasks(names: Collection[str]) -> _Stopping:
    """Removes the queued tasks of ``names``, then interrupts the running ones (as Ctrl-C would: `dvc queue kill`
    sends SIGINT to the worker's process group, which ends the stage and the worker after it) and, past
    KILL_GRACE_S, kills them (`--force`). Repeated until none is queued or running: a task can start between two
    reads of the queue, and one still setting up cannot be killed yet."""
    state, deadline, first_kill = _Stopping(), time.monotonic() + STOP_DEADLINE_S, None
    while True:
        status = _queue_status()
        if status is None:
            state.unreadable = True
            return state
        state.tasks, state.workers = (tasks := parse_queue_status(status)), workers_alive(status)
        ours = [t for t in tasks if t.name in names and t.status in ("Queued", "Running")]
        if not ours:
            return state
        running = [t for t in ours if t.status == "Running"]
        if time.monotonic() > deadline:
            if running and not state.forced:  # the last resort is tried before giving up, however slow dvc was
                state.forced = _quiet("queue", "kill", "--force", *(t.rev for t in running))[0]
            state.left = ours
            return state
        queued = [t for t in ours if t.status == "Queued"]
        # Removed before the running ones are killed: a worker whose task ends takes the next one.
        if queued and _quiet("queue", "remove", *(t.rev for t in queued))[0]:
            state.removed |= {t.rev: t.name for t in queued}
        fresh = [t for t in running if t.rev not in state.killed]
        if fresh:
            _, out = _quiet("queue", "kill", *(t.rev for t in fresh))
            # Killed are those dvc reports; one still setting up is not, and is tried again.
            state.killed |= {t.rev: t.name for t in fresh if f"{t.rev} has been killed" in out}
            first_kill = first_kill or time.monotonic()
        elif running and first_kill and time.monotonic() - first_kill > KILL_GRACE_S and not state.forced:
            state.forced = _quiet("queue", "kill", "--force", *(t.rev for t in running))[0]
        time.sleep(POLL_S)


def stop_experiments(names: Collection[str]) -> str:
    """Stops the experiments of ``names`` that are queued or running and, when the queue then holds nothing else,
    its workers; returns one line: what finished, what was stopped, and how to stop what could not be."""
    state = _stop_tasks(set(names))
    tasks = state.tasks
    # Killed tasks end as failed entries named like the points: a rerun's `dvc exp show` would list them beside the
    # points' results. Removed; a task that failed on its own keeps its entry (`dvc queue logs`).
    failed_killed = [t.rev for t in tasks if t.rev in state.killed and t.status == "Failed"]
    if failed_killed:
        _quiet("queue", "remove", *failed_killed)
    others_pending = any(t.status in ("Queued", "Running") for t in tasks if t.name not in names)
    # Stopped now rather than when they find the queue empty (10 s or more). The worker of an interrupted task ends
    # with it (the SIGINT reached it too), so there is often none left to stop.
    workers_stopped = not state.unreadable and not others_pending and (not state.workers or _quiet("queue", "stop")[0])
    ok, listed = _quiet("exp", "ls", "--name-only")
    finished = [n for n in names if n in set(listed.split())] if ok else None
    return _summary(names, finished, state, workers_stopped, others_pending)


def _summary(
    names: Collection[str], finished: list[str] | None, state: _Stopping, workers_stopped: bool, others: bool
) -> str:
    done = "?" if finished is None else str(len(finished))
    parts = [f"interrupted: {done} of {len(names)} points finished"]
    running = [t.rev for t in state.left if t.status == "Running"]
    queued = [t.rev for t in state.left if t.status == "Queued"]
    stopped = sorted(name for rev, name in state.killed.items() if rev not in running)
    if stopped:
        parts.append(f"stopped {len(stopped)} running ({', '.join(stopped)})")
    if state.removed:
        parts.append(f"removed {len(state.removed)} queued")
    if state.unreadable:
        parts.append("`dvc queue status` failed: see it, then `dvc queue kill <task>` and `dvc queue remove <task>`")
    if running:
        parts.append(f"{len(running)} still running: stop with `dvc queue kill --force {' '.join(running)}`")
    if queued:
        parts.append(f"{len(queued)} still queued: remove with `dvc queue remove {' '.join(queued)}`")
    if others:
        parts.append("the queue's workers go on with other experiments")
    elif not workers_stopped and not state.unreadable:
        parts.append("stop the queue's workers with `dvc queue stop`")
    parts.append(RERUN)
    return "; ".join(parts)


def exp_show() -> list:
    return json.loads(dvc("exp", "show", "--json", capture=True))


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _interrupted(line: str, signum: int) -> None:
    # On a line of its own at a terminal: the followed experiment's progress bar leaves the cursor after itself.
    print(("\n" if sys.stderr.isatty() else "") + line, file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def run_script(main: Callable[[], None]) -> None:
    """Runs a sweep script's ``main``: what the user can fix (a failed dvc command, whose own message
    is above; a bad params.yaml or --set; a failed experiment) ends in one line, without a traceback;
    so does an interrupt, after the sweep's experiments are stopped (exit 128 + the signal, 130 for Ctrl-C)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main()
    except SweepInterrupted as err:
        _interrupted(str(err), err.signum)
    except KeyboardInterrupt as err:  # outside run_experiments: none of the sweep's experiments is queued or running
        line = f"interrupted: none of the sweep's experiments is queued or running; {RERUN}"
        _interrupted(line, getattr(err, "signum", signal.SIGINT))
    except subprocess.CalledProcessError as err:
        sys.exit(f"error: `{' '.join(err.cmd)}` failed (exit {err.returncode}); its own message is above")
    except (RuntimeError, FtcotError, json.JSONDecodeError) as err:
        sys.exit(f"error: {err}")
