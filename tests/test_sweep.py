"""Sweeps: a recorded one is shown only beside the run it describes; any parameter grid; running them (--jobs, and
an interrupted sweep stops its experiments)."""

import argparse
import fcntl
import json
import os
import pty
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
import yaml

from ftcot import experiments
from ftcot.config import leaf_keys, load_params
from ftcot.experiments import Task, jobs_arg, parse_queue_status, workers_alive
from ftcot.report.document import render_markdown
from ftcot.report.sweep import (
    SweepError,
    flatten,
    grid_points,
    parse_grid,
    point_slug,
    set_args,
    sweep_fingerprint,
    sweep_points,
    sweep_stale_reason,
)
from ftcot.testing.fake_openai import FakeOpenAI
from ftcot.testing.project import copy_project, project_env, run

REPO = Path(__file__).resolve().parents[1]


def current() -> dict:
    return load_params(REPO / "params.yaml").model_dump(mode="json")


def recorded(params: dict, accuracy: float = 0.6) -> dict:
    """A diversity sweep (D = 1, 8) recorded with ``params``; its D=1 point's accuracy ``accuracy``."""
    points = [
        {"task": "coin_flip", "method": "ft_cot", "values": {"diversity": d}, "accuracy": a}
        | {"experiment": f"diversity-{d}-abc1234"}
        for d, a in ((1, accuracy), (8, 0.9))
    ]
    return {
        "name": "diversity",
        "keys": ["diversity"],
        "commit": "abc1234",
        "regenerate": "python scripts/sweep.py --set diversity=1,8 --name diversity",
        "params": sweep_fingerprint(params, ("diversity",)),
        "points": points,
    }


def headline(accuracy: float) -> dict:
    return {"coin_flip": {"ft_cot": {"accuracy": accuracy}, "teacher": {"test_accuracy": 0.8}}}


def test_fingerprint_leaves_out_the_sweep_axes_the_report_and_operational_keys():
    fingerprint = sweep_fingerprint(current(), ("diversity",))
    assert "student.learning_rate" in fingerprint and "teacher.oracle.error_rate" in fingerprint
    assert not [k for k in fingerprint if k.startswith(("diversity", "report."))]
    assert "teacher.concurrency" not in fingerprint
    assert "diversity" in sweep_fingerprint(current())  # an axis only where it is swept
    assert flatten({"a": {"b": 1, "c": []}, "d": {}}) == {"a.b": 1, "a.c": [], "d": {}}


def test_a_sweep_of_this_configuration_is_shown():
    params = current()  # diversity 1
    assert sweep_stale_reason(recorded(params), params, headline(0.6)) is None
    params_d8 = params | {"diversity": 8}  # the run at another point of the same sweep
    assert sweep_stale_reason(recorded(params), params_d8, headline(0.9)) is None
    params_d4 = params | {"diversity": 4}  # between the points: nothing to compare with
    assert sweep_stale_reason(recorded(params), params_d4, headline(0.1)) is None


def test_a_sweep_of_other_parameters_is_left_out_with_the_keys_that_differ():
    params = current()
    other = json.loads(json.dumps(params))
    other["student"]["model"] = "smollm2-135m"
    reason = sweep_stale_reason(recorded(other), params, headline(0.6))
    assert reason == "it ran with other parameters: student.model ('smollm2-135m' there, 'tiny-llama' here)"


def test_a_sweep_that_contradicts_the_headline_is_left_out():
    params = current()
    reason = sweep_stale_reason(recorded(params, accuracy=0.5), params, headline(0.6))
    assert reason == (
        "its point at diversity=1 for coin_flip / ft_cot (50.0%) is not this run's accuracy (60.0%): "
        "it was made by other code or data"
    )


def test_a_sweep_without_provenance_is_left_out():
    reason = sweep_stale_reason({"points": recorded(current())["points"]}, current(), headline(0.6))
    assert reason == "it does not record the parameters it ran with"


def test_report_says_why_a_sweep_is_left_out():
    summary = {"teacher": "t", "student": "s", "diversity": 1, "tasks": {}}
    left_out = {"name": "diversity", "note": "The recorded sweep is left out: because."}
    md = render_markdown(summary, {}, {}, {}, [left_out])
    assert "### diversity\n\nThe recorded sweep is left out: because." in md and "Swept:" not in md


def test_collect_only_without_experiments_ends_in_a_message(tmp_path):
    # Outside a DVC project (and with no experiments), dvc fails: one line, exit 1, no traceback.
    script = REPO / "scripts" / "sweep.py"
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [sys.executable, str(script), "--set", "diversity=1", "--collect-only"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "error: run this in the project's git repository, with params.yaml committed" in proc.stderr
    assert "Traceback" not in proc.stderr
    subprocess.run(["git", "add", "params.yaml"], cwd=tmp_path, check=True)
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", *identity, "commit", "-qm", "p"], cwd=tmp_path, check=True)
    cmd = [sys.executable, str(script), "--set", "diversity=1", "--collect-only"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: `dvc exp show --json` failed" in proc.stderr  # not a DVC project: dvc says why above


# ---- any parameter grid (scripts/sweep.py) ------------------------------------------------------


def test_a_grid_of_any_parameters():
    grid = parse_grid(["diversity=1,2", "data.max_train=50,all", "seeds=[0,1],[2]"], leaf_keys())
    assert grid == {"diversity": [1, 2], "data.max_train": [50, None], "seeds": [[0, 1], [2]]}
    points = grid_points(grid)
    assert len(points) == 8 and points[0] == {"diversity": 1, "data.max_train": 50, "seeds": [0, 1]}
    assert point_slug({"diversity": 8, "data.max_train": None}) == "8-all"
    assert set_args({"data.max_train": None, "filter.keep": "all"}) == [
        "-S",
        "data.max_train=null",
        "-S",
        'filter.keep="all"',
    ]
    with pytest.raises(SweepError, match=r"'max_train' is no parameter \(did you mean data.max_train\?\)"):
        parse_grid(["max_train=1"], leaf_keys())
    with pytest.raises(SweepError, match="write key=value1,value2"):
        parse_grid(["diversity"], leaf_keys())
    with pytest.raises(SweepError, match="nothing to sweep"):
        parse_grid([], leaf_keys())


def state(name: str, params: dict, accuracy: float) -> dict:
    headline = {
        "coin_flip": {
            "ft_cot": {"accuracy": accuracy, "accuracy_ci_low": 0.1, "accuracy_ci_high": 0.9},
            "teacher": {"test_accuracy": 0.8, "kept": 3, "kept_rate": 0.5},
        }
    }
    return {
        "rev": "x",
        "name": name,
        "data": {"params": {"params.yaml": {"data": params}}, "metrics": {"metrics/headline.json": {"data": headline}}},
    }


def test_sweep_points_are_read_back_from_dvc_exp_show_and_checked():
    shown = [
        {
            "experiments": [
                {"revs": [state("keep-all-abc", {"filter": {"keep": "all"}}, 0.6)]},
                {"revs": [state("keep-correct-abc", {"filter": {"keep": "correct"}}, 0.9)]},
            ]
        }
    ]
    names = {"keep-correct-abc": {"filter.keep": "correct"}, "keep-all-abc": {"filter.keep": "all"}}
    points = sweep_points(shown, names, ["coin_flip"])
    assert [(p["values"]["filter.keep"], p["method"], p["accuracy"]) for p in points] == [
        ("correct", "ft_cot", 0.9),
        ("correct", "teacher", 0.8),
        ("all", "ft_cot", 0.6),
        ("all", "teacher", 0.8),
    ]
    with pytest.raises(SweepError, match=r"ran with filter.keep='all', expected 'correct'"):
        sweep_points(shown, {"keep-all-abc": {"filter.keep": "correct"}}, ["coin_flip"])
    with pytest.raises(SweepError, match="missing or failed"):
        sweep_points(shown, {"nope": {"filter.keep": "all"}}, ["coin_flip"])


def test_a_point_that_failed_once_and_then_ran_is_read_from_its_run():
    # An interrupted or failed point keeps a failed queue entry of its name; the rerun's result is beside it.
    failed = state("keep-all-abc", {"filter": {"keep": "all"}}, 0.0) | {"error": {"msg": "Experiment run failed"}}
    ran = state("keep-all-abc", {"filter": {"keep": "all"}}, 0.6)
    for order in ([failed, ran], [ran, failed]):
        shown = [{"experiments": [{"revs": [s]} for s in order]}]
        points = sweep_points(shown, {"keep-all-abc": {"filter.keep": "all"}}, ["coin_flip"])
        assert [p["accuracy"] for p in points if p["method"] == "ft_cot"] == [0.6]
    with pytest.raises(SweepError, match="missing or failed"):
        sweep_points([{"experiments": [{"revs": [failed]}]}], {"keep-all-abc": {"filter.keep": "all"}}, ["coin_flip"])


def test_a_recorded_sweep_is_shown_only_beside_a_run_of_its_parameters():
    params = current()
    record = {
        "name": "keep",
        "keys": ["filter.keep"],
        "commit": "abc",
        "regenerate": "python scripts/sweep.py",
        "params": sweep_fingerprint(params, ("filter.keep",)),
        "points": [
            {
                "task": "coin_flip",
                "method": "ft_cot",
                "values": {"filter.keep": "all"},
                "accuracy": 0.5,
                "accuracy_ci_low": 0.4,
                "accuracy_ci_high": 0.6,
                "experiment": "keep-all-abc",
            }
        ],
    }
    assert sweep_stale_reason(record, params) is None
    assert sweep_stale_reason(record, json.loads(json.dumps(params)) | {"filter": {"keep": "all"}}) is None  # its axis
    other = json.loads(json.dumps(params))
    other["student"]["epochs"] = 1.0
    assert sweep_stale_reason(record, other).startswith("it ran with other parameters: student.epochs")
    summary = {"teacher": "t", "student": "s", "diversity": 1, "tasks": {}}
    md = render_markdown(summary, {}, {}, {"sweep/keep": "sweep_keep.png"}, [record])
    assert "### keep" in md and "| coin_flip | Student: Fine-tune-CoT | all | 50.0 [40.0, 60.0] |" in md
    assert "![Sweep keep](sweep_keep.png)" in md


def test_a_bad_grid_or_point_ends_the_sweep_script_in_one_line_before_any_experiment(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def sweep(*sets: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(REPO / "scripts" / "sweep.py"), *(a for s in sets for a in ("--set", s))]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)

    for sets, message in (
        (["max_train=1"], "error: --set 'max_train=1': 'max_train' is no parameter (did you mean data.max_train?)"),
        (["filter.keep=correct,some"], "error: the point {'filter.keep': 'some'} is not a valid configuration"),
        (["diversity=0"], "error: the point {'diversity': 0} is not a valid configuration"),
    ):
        proc = sweep(*sets)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
        assert "+ dvc" not in proc.stderr  # nothing queued, nothing run


# ---- --jobs, and an interrupted sweep ---------------------------------------------------------------------------


def test_jobs_below_one_is_refused_before_anything_is_queued(tmp_path):
    assert jobs_arg("2") == 2
    for bad in ("0", "-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError):
            jobs_arg(bad)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "scripts/sweep.py"), "--set", "diversity=1,2", "--jobs", "0"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    # argparse's own exit: before params.yaml is read, so nothing is queued (DVC would wait for a worker forever).
    assert proc.returncode == 2 and "argument --jobs: at least 1 experiment runs at once, got 0" in proc.stderr
    assert "+ dvc" not in proc.stderr and "Traceback" not in proc.stderr


# `dvc queue status` of DVC 3.67.1, as it prints it to a pipe (its Created column holds spaces; a name may be absent).
QUEUE_STATUS = """Task     Name                    Created    Status
0d2c1a4  diversity-1-abc1234     10:22 AM   Running
9f8e7d6  diversity-2-abc1234     10:22 AM   Queued
1234567  -                       Jan 01, 2000  Failed
abcdef0  keep-all-abc1234        10:21 AM   Success

Worker status: 1 active, 0 idle
"""


def test_queue_status_is_read_row_by_row():
    assert parse_queue_status(QUEUE_STATUS) == [
        Task("0d2c1a4", "diversity-1-abc1234", "Running"),
        Task("9f8e7d6", "diversity-2-abc1234", "Queued"),
        Task("1234567", "-", "Failed"),
        Task("abcdef0", "keep-all-abc1234", "Success"),
    ]
    assert workers_alive(QUEUE_STATUS)
    idle = "No experiment tasks in the queue.\n\nWorker status: 0 active, 0 idle\n"
    assert parse_queue_status(idle) == [] and not workers_alive(idle)


# A stand-in for `dvc queue ...` and `dvc exp ls` over a queue kept in queue.json: a killed task ends (as failed) by
# the next read of the queue, unless it is stuck (it ignores every signal); each call is logged.
FAKE_DVC = """#!/usr/bin/env python3
import json, sys, time
from pathlib import Path
state_file = Path("queue.json")
state = json.loads(state_file.read_text())
args = sys.argv[1:]
with open("calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")
tasks = state["tasks"]
if args == ["queue", "status"]:
    for t in tasks:
        if t["status"] == "Killed":
            t["status"] = "Failed"
    print("Task     Name    Created    Status")
    for t in tasks:
        print(t["rev"], t["name"], "10:22 AM", t["status"])
elif args[:2] == ["queue", "remove"]:
    state["tasks"] = [t for t in tasks if t["rev"] not in args[2:] or t["status"] == "Running"]
elif args[:2] == ["queue", "kill"]:
    for t in tasks:
        if t["rev"] in args[2:] and t["status"] == "Running":
            t["status"] = "Running" if t.get("stuck") else "Killed"
            print(t["rev"], "has been killed.")
elif args == ["exp", "ls", "--name-only"]:
    print("\\n".join(state["finished"]))
elif args[:3] == ["exp", "run", "--queue"]:
    tasks.append({"rev": f"{len(tasks) + 1:07x}", "name": args[-1], "status": "Queued"})
elif args[:3] == ["exp", "run", "--run-all"]:  # the first task runs, and the follower waits
    next(t for t in tasks if t["status"] == "Queued")["status"] = "Running"
    state_file.write_text(json.dumps(state))
    time.sleep(120)
state_file.write_text(json.dumps(state))
"""


def fake_queue(tmp_path: Path, monkeypatch, tasks: list[dict], finished: list[str]) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/dvc").write_text(FAKE_DVC)
    (tmp_path / "bin/dvc").chmod(0o755)
    (tmp_path / "queue.json").write_text(json.dumps({"tasks": tasks, "finished": finished}))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "POLL_S", 0.0)
    return tmp_path / "calls.log"


def test_stopping_a_sweep_leaves_other_experiments_and_their_workers_alone(tmp_path, monkeypatch):
    tasks = [
        {"rev": "aaaaaaa", "name": "p-2", "status": "Running"},
        {"rev": "bbbbbbb", "name": "p-3", "status": "Queued"},
        {"rev": "ccccccc", "name": "theirs", "status": "Queued"},
    ]
    calls = fake_queue(tmp_path, monkeypatch, tasks, finished=["p-1", "theirs-old"])
    line = experiments.stop_experiments(["p-1", "p-2", "p-3"])
    assert line == (
        "interrupted: 1 of 3 points finished; stopped 1 running (p-2); removed 1 queued; "
        "the queue's workers go on with other experiments; " + experiments.RERUN
    )
    assert calls.read_text().splitlines() == [
        "queue status",
        "queue remove bbbbbbb",  # before the kill: the worker would take it next
        "queue kill aaaaaaa",
        "queue status",
        "queue remove aaaaaaa",  # its failed entry: the rerun's `dvc exp show` lists only the result
        "exp ls --name-only",
    ]
    assert [t["name"] for t in json.loads((tmp_path / "queue.json").read_text())["tasks"]] == ["theirs"]


def test_a_task_that_will_not_stop_is_forced_and_then_named_with_the_command(tmp_path, monkeypatch):
    tasks = [{"rev": "aaaaaaa", "name": "p-1", "status": "Running", "stuck": True}]
    calls = fake_queue(tmp_path, monkeypatch, tasks, finished=[])
    monkeypatch.setattr(experiments, "KILL_GRACE_S", 0.0)
    monkeypatch.setattr(experiments, "STOP_DEADLINE_S", 1.0)
    line = experiments.stop_experiments(["p-1", "p-2"])
    assert line.startswith("interrupted: 0 of 2 points finished; 1 still running: stop with ")
    assert "`dvc queue kill --force aaaaaaa`" in line and line.endswith(experiments.RERUN)
    kills = [c for c in calls.read_text().splitlines() if c.startswith("queue kill")]
    assert kills == ["queue kill aaaaaaa", "queue kill --force aaaaaaa"]  # interrupted once, then killed once
    assert "queue stop" in calls.read_text().splitlines()  # warm: the workers end after the task


def test_sigterm_stops_the_sweeps_experiments_too(tmp_path):
    # The script end to end over the stand-in: the signal handlers, the follower's own process group, the exit status.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/dvc").write_text(FAKE_DVC)
    (tmp_path / "bin/dvc").chmod(0o755)
    (tmp_path / "queue.json").write_text(json.dumps({"tasks": [], "finished": []}))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {"PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], ["add", "params.yaml"], [*identity, "commit", "-qm", "p"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, check=True, env=env)
    commit = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=tmp_path, capture_output=True, text=True)
    sweep = [sys.executable, str(REPO / "scripts/sweep.py"), "--set", "diversity=1,2"]
    proc = subprocess.Popen(sweep, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        calls = tmp_path / "calls.log"
        assert poll(lambda: calls.exists() and "exp run --run-all" in calls.read_text(), 60, 0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: 0 of 2 points finished; stopped 1 running (diversity-1-{commit.stdout.strip()}); "
        f"removed 1 queued; {experiments.RERUN}"
    )
    assert json.loads((tmp_path / "queue.json").read_text())["tasks"] == []


class Terminal:
    """``cmd`` as the foreground job of a terminal of its own (a pseudo-terminal), where Ctrl-C is a keystroke: the
    terminal sends SIGINT to the foreground process group, as for a user. Its output is read all along, as a
    terminal does, so that no writer ever blocks; the queue workers DVC spawns inherit the terminal too."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict):
        self.master, slave = pty.openpty()

        def controlling_terminal() -> None:  # a new session, whose controlling terminal is this one
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            # As a shell starts a job: Ctrl-C's signal neither ignored nor blocked, whatever the test process
            # (a pytest-xdist worker, after other tests' libraries) holds; both are inherited across exec.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])

        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal
        )
        os.close(slave)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # every writer has closed it, or the test has
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def signal_state(self) -> str:
        """The job's ignored and blocked signals and the terminal's foreground group, for a failure message."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
            lines = [line for line in status if line.startswith(("SigIgn", "SigBlk"))]
            lines.append(f"foreground group {os.tcgetpgrp(self.master)}, job's group {os.getpgid(self.proc.pid)}")
            lines.append(f"terminal lflag ISIG {bool(termios.tcgetattr(self.master)[3] & termios.ISIG)}")
            return "; ".join(lines)
        except OSError as err:
            return f"not readable: {err}"

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace").replace("\r\n", "\n")

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        time.sleep(0.5)  # what is still on its way
        os.close(self.master)


def processes_in(root: Path) -> list[str]:
    """The command lines of live processes working in ``root`` (queue workers, experiments, their stages)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if cwd == root or root in cwd.parents:
            found.append(f"{entry.name}: {cmdline}")
    return found


def poll(check, timeout: float, every: float = 1.0):
    """``check()``'s first truthy value within ``timeout`` seconds, else its last."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(every)
    return value


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc to find leftover processes")
def test_ctrl_c_stops_the_sweeps_experiments_and_says_so_in_one_line(tmp_path):
    # A slow teacher (one request at a time, a second each) keeps the first point in its teach stage, paying, and
    # the second in the queue, when Ctrl-C comes.
    with FakeOpenAI(latency=1.0) as server:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"].update({"tasks": ["coin_flip"], "num_questions": 20})
        params["teacher"].update({"backend": "openai", "model": "fake", "base_url": server.base_url})
        params["teacher"].update({"api_key_env": None, "concurrency": 1})
        params["student"]["epochs"] = 1
        params["methods"]["finetune"] = ["ft_cot"]
        root = copy_project(tmp_path / "project", yaml.safe_dump(params, sort_keys=False)).resolve()
        env = project_env(root)
        commit = run(["git", "rev-parse", "--short=7", "HEAD"], root, env).stdout.strip()
        names = [f"diversity-{d}-{commit}" for d in (1, 2)]
        sweep = [sys.executable, "scripts/sweep.py", "--set", "diversity=1,2", "--jobs", "1"]
        with Terminal(sweep, root, env) as term:  # open until the end: the workers write to it too
            assert poll(lambda: server.attempts or term.proc.poll() is not None, 180, 0.2), term.text()
            assert term.proc.poll() is None, term.text()
            working = processes_in(root)  # what must be gone afterwards is seen here: the worker and the stage
            assert any("queue-worker" in p for p in working) and any("stages/teach.py" in p for p in working), working
            before = term.signal_state()
            term.ctrl_c()
            # Stopping takes a few dvc commands, each a second or more (many more on a loaded machine), and
            # gives a task that will not stop up to a minute: wait well beyond, and show where it was if not.
            try:
                term.proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                stuck = f"the sweep did not stop within 300 s of Ctrl-C ({before}):\n{term.text()[-4000:]}"
                raise AssertionError(stuck) from None
            output = term.text()
            assert term.proc.returncode == 130, f"{before}\n{output[-4000:]}"
            assert "Traceback" not in output and "in the background" not in output  # dvc's follower says nothing
            assert output.strip().splitlines()[-1] == (
                f"interrupted: 0 of 2 points finished; stopped 1 running ({names[0]}); removed 1 queued; "
                "run the same command again to finish: it reuses every finished point"
            ), output

            # Nothing of the sweep is left: no task in the queue, no worker, no process, and no request from now on.
            asked, settling = sum(server.attempts.values()), time.monotonic()

            def settled() -> bool:
                status = run(["dvc", "queue", "status"], root, env).stdout
                ours = [t for t in parse_queue_status(status) if t.name in names]
                return not ours and not workers_alive(status) and not processes_in(root)

            assert poll(settled, 30), (run(["dvc", "queue", "status"], root, env).stdout, processes_in(root))
            # The killed point did not finish: a rerun runs it again.
            assert not set(names) & set(run(["dvc", "exp", "ls", "--name-only"], root, env).stdout.split())
            time.sleep(max(0.0, settling + 3 - time.monotonic()))
            assert sum(server.attempts.values()) == asked
