"""The training checkpoints kept outside DVC's outputs: which one to resume, and when to remove them.

A stage run keeps its checkpoints in ``.checkpoints/<task>-<variant>-seed<seed>-<key>/`` inside the
project that trains (DVC runs every stage in the project's root; git and DVC ignore the folder), or
under ``$FTCOT_CHECKPOINT_DIR``. The key hashes every input of the run and the training code
(``ftcot.student.training.checkpoint_key``). Two clones on one machine training the same
configuration so never share a folder. While it runs a stage holds an exclusive ``flock`` on
``<folder>.lock`` next to that folder (the file holds its process id); the kernel drops the lock
when the process ends, killed or not. So "no one holds the lock" means exactly "no live process is
using these checkpoints", whatever the time since they were written."""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ftcot.errors import FtcotError

log = logging.getLogger("ftcot")

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_KEY = "[0-9a-f]{16}"


class CheckpointsInUseError(FtcotError, RuntimeError):
    """Another live process trains on the same inputs with the same checkpoint folder."""


CHECKPOINT_DIR_ENV = "FTCOT_CHECKPOINT_DIR"


def checkpoint_root() -> Path:
    """``$FTCOT_CHECKPOINT_DIR`` if set, else ``.checkpoints`` in the project (the working folder
    of a DVC stage is the project's root), as an absolute path."""
    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or ".checkpoints").absolute()


def checkpoint_folder(task: str, variant: str, seed: int, key: str) -> Path:
    """One folder per student (task, variant, seed) and inputs (``key``): the students of other
    seeds are never another one's stale checkpoints."""
    return checkpoint_root() / f"{task}-{variant}-seed{seed}-{key}"


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed (it was cut off while being written), or None if it can.

    Cheap: reads trainer_state.json and the headers of the weight files, not the tensors. The Trainer
    writes trainer_state.json last, so a kill mid-save leaves it missing; a truncated file (disk full,
    power loss) shows as a header that does not cover the file, or a zip without its directory.
    """
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError) as err:
        return f"trainer_state.json unreadable ({err})"
    weights = sorted(checkpoint.glob("*.safetensors"))  # model.safetensors, or adapter_model.safetensors for LoRA
    if not weights:
        return "no *.safetensors weights"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as f:
                list(f.keys())
        except (SafetensorError, OSError) as err:
            return f"{path.name} unreadable ({err})"
    # optimizer.pt, scheduler.pt, rng_state.pth: torch.save writes zips, whose directory is at the end.
    for path in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]):
        try:
            with zipfile.ZipFile(path):
                pass
        except (OSError, zipfile.BadZipFile) as err:
            return f"{path.name} unreadable ({err})"
    return None


def _checkpoints_newest_first(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and _CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True)


def last_complete_checkpoint(output_dir: str | Path, remove_incomplete: bool = True) -> Path | None:
    """The newest checkpoint in ``output_dir`` that can be resumed, or None to start over.

    Newer incomplete ones are removed (with ``remove_incomplete``; under several processes only one
    should remove): left in place, the Trainer would pick them, fail, and fail again on every rerun.
    """
    checkpoints = _checkpoints_newest_first(Path(output_dir))
    for checkpoint in checkpoints:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            if checkpoint != checkpoints[0]:
                log.warning("resuming from %s, the newest complete checkpoint", checkpoint.name)
            return checkpoint
        log.warning("checkpoint %s is incomplete, skipping it: %s", checkpoint, problem)
        if remove_incomplete:
            shutil.rmtree(checkpoint, ignore_errors=True)
    if checkpoints:
        log.warning("no complete checkpoint in %s: training starts over", output_dir)
    return None


def _lock_file(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The previous holder may have deleted the file before letting go (a cleanup does): a lock on a
        # deleted file guards nothing, as the next process creates a new one. Lock the file on disk.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _holder(lock: Path) -> str:
    """The process that holds ``lock``, as its file says (it writes its id once it holds it)."""
    try:
        pid = int(lock.read_text().strip())
    except (OSError, ValueError):
        return "another process"
    return f"process {pid}"


def _unlock(path: Path, fd: int) -> None:
    path.unlink(missing_ok=True)  # while still held, so no one locks the file being deleted
    os.close(fd)


@contextmanager
def claimed(folder: Path) -> Iterator[None]:
    """Marks ``folder`` as in use for the duration, so that ``remove_stale_checkpoints`` leaves it alone."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_file(folder)
    fd = _lock(lock)
    if fd is None:
        holder = _holder(lock)
        raise CheckpointsInUseError(
            f"{folder} is in use by {holder} training on the same inputs: wait for it to finish, or "
            f"give this run checkpoints of its own ({CHECKPOINT_DIR_ENV}=<folder>)"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        _unlock(lock, fd)


def remove_stale_checkpoints(current: Path) -> list[Path]:
    """Removes the checkpoint folders of the same task, variant and seed as ``current`` (named
    ``<task>-<variant>-seed<seed>-<key>``) but another key, unless a live process holds them. Returns those removed.

    Their key no longer matches this stage's inputs, so this stage will not resume them; left alone they
    stay forever, e.g. when DVC restores the stage from its run-cache instead of running it. A run with
    other params that is still going (another experiment) holds its lock and is skipped.
    """
    prefix = current.name.rsplit("-", 1)[0]
    stale = re.compile(rf"{re.escape(prefix)}-{_KEY}")
    names = {p.name.removesuffix(".lock") for p in current.parent.glob(f"{glob.escape(prefix)}-*")}
    removed = []
    for name in sorted(names - {current.name}):
        folder = current.parent / name
        if not stale.fullmatch(name):
            continue
        lock = _lock_file(folder)
        fd = _lock(lock)
        if fd is None:
            log.info("keeping %s: in use by another process", folder)
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            _unlock(lock, fd)
        log.info("removed stale checkpoints %s (other inputs than this run)", folder)
        removed.append(folder)
    return removed
