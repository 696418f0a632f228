"""No orphans: `kill -9` of `dvc repro` ends the stage process too (ftcot/lifecycle.py), and nothing else does."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]

# A stage in miniature: says who it is, then lingers (bounded, so a failed test cannot leave it forever), and
# records that its finally block ran, as the teach stage's cleanup would; with "hang", its exit hangs.
LINGER = """\
import os
import sys
import threading
import time
from pathlib import Path

from ftcot.stage import run_stage


def main() -> None:
    pid_file, ended_file = Path(sys.argv[1]), Path(sys.argv[2])
    if sys.argv[3:] == ["hang"]:  # a worker that never finishes, as a request in flight: the exit would wait on it
        threading.Thread(target=time.sleep, args=(60,)).start()
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(pid_file)  # whole or absent, never half written
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        ended_file.write_text("finally ran")


if __name__ == "__main__":
    run_stage(main)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guarantee is Linux only")


def env_for(shell: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    env.pop("SHELL", None)
    if shell is not None:
        env["SHELL"] = shell
    return env


def wait_for_pid(pid_file: Path, proc: subprocess.Popen, log: Path | None = None, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while not pid_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            output = log.read_text() if log and log.exists() else ""
            raise AssertionError(f"the stage never started (rc {proc.returncode}):\n{output}")
        time.sleep(0.05)
    return int(pid_file.read_text())


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_quietly(*procs: psutil.Process | None) -> None:
    for proc in procs:
        if proc is not None and not gone(proc):
            try:
                proc.kill()  # psutil refuses if the pid was reused by another process
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    env = env_for(None)
    subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=root, env=env, check=True)
    (root / ".dvc/config").write_text("[core]\n    analytics = false\n    check_update = false\n")
    (root / "linger.py").write_text(LINGER)
    return root


def write_stage(root: Path, cmd: str) -> None:
    (root / "dvc.yaml").write_text(f"stages:\n  linger:\n    cmd: {cmd}\n    deps: [linger.py]\n")


# How each shell lays out the process tree (seen with `ps -o pid,ppid,cmd`): bash execs a lone command, so the
# stage's parent is dvc; dash (/bin/sh on Debian, also used when SHELL is unset) keeps `sh -c` in between; no shell
# can exec a command that is not the last one; and torchrun is the parent of its workers (DDP finetune).
TORCHRUN = "torchrun --standalone --nproc_per_node 1 linger.py stage.pid ended"
CASES = {
    "bash": ("/bin/bash", "python linger.py stage.pid ended"),
    "sh": ("/bin/sh", "python linger.py stage.pid ended"),
    "SHELL unset": (None, "python linger.py stage.pid ended"),
    "bash, not last": ("/bin/bash", "python linger.py stage.pid ended && true"),
    "torchrun, bash": ("/bin/bash", TORCHRUN),
    "torchrun, sh": ("/bin/sh", TORCHRUN),
    "sh, exit hangs": ("/bin/sh", "python linger.py stage.pid ended hang"),
}
needs_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=needs_torchrun) if "torchrun" in case else case for case in CASES]
)
def test_kill_9_of_dvc_ends_the_stage(dvc_project: Path, case: str) -> None:
    shell, cmd = CASES[case]
    write_stage(dvc_project, cmd)
    log = dvc_project / "dvc.log"
    stage = parent = None
    with log.open("w") as out:
        dvc = subprocess.Popen(
            ["dvc", "repro"], cwd=dvc_project, env=env_for(shell), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        stage = psutil.Process(wait_for_pid(dvc_project / "stage.pid", dvc, log))
        parent = psutil.Process(stage.ppid())
        if case == "bash":
            assert parent.pid == dvc.pid  # the direct case: prctl's parent-death signal
        elif case == "bash, not last":
            assert parent.pid != dvc.pid and parent.ppid() == dvc.pid  # the intermediate shell: the watchdog

        dvc.send_signal(signal.SIGKILL)
        dvc.wait()

        assert wait_gone(stage, 10), f"stage {stage.pid} outlived dvc:\n{log.read_text()}"
        assert (dvc_project / "ended").read_text() == "finally ran"  # ended by SIGTERM, cleanup included
        assert wait_gone(parent, 10)  # an intermediate shell ends with its command, torchrun with its failed worker
        if case == "sh, exit hangs":
            assert "exiting now" in log.read_text()  # the hard deadline
    finally:
        dvc.kill()
        dvc.wait()
        kill_quietly(stage, parent)


@pytest.mark.parametrize("wrapper", ["direct", "sh -c", pytest.param("torchrun", marks=needs_torchrun)])
def test_no_misfire_while_the_launcher_lives(tmp_path: Path, wrapper: str) -> None:
    """Run by hand (here by the test, which stays alive), a stage script runs on."""
    script = tmp_path / "linger.py"
    script.write_text(LINGER)
    argv = [sys.executable, str(script), str(tmp_path / "stage.pid"), str(tmp_path / "ended")]
    if wrapper == "sh -c":
        argv = ["/bin/sh", "-c", f"{shlex.join(argv)}; true"]  # the shell stays, as under dvc with dash
    elif wrapper == "torchrun":
        argv = ["torchrun", "--standalone", "--nproc_per_node", "1", *argv[1:]]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env_for(None), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    stage = None
    try:
        stage = psutil.Process(wait_for_pid(tmp_path / "stage.pid", proc))
        time.sleep(2)  # four watchdog rounds
        assert not gone(stage)
        assert proc.poll() is None
    finally:
        kill_quietly(stage)
        proc.kill()
        proc.wait()
