"""No orphans: a stage process ends when the process that launched it dies.

DVC runs a stage's ``cmd`` as ``$SHELL -c cmd`` (``/bin/sh -c`` when SHELL is unset) and waits for it. bash execs a
lone command, so the stage's parent is dvc itself; dash (Debian's /bin/sh) forks it, so a ``sh -c`` stays in
between; torchrun adds one more level for DDP workers. When dvc is killed with SIGKILL nothing tells them: they are
reparented and go on (a ``teach`` stage orphaned this way kept paying for answers beside the rerun).

``end_with_parent()`` guards against that, on Linux only:

* ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel signals this process as soon as its direct parent exits;
* a daemon thread checks twice a second that every link of the chain recorded at start still holds: this process's
  parent and, while that parent only relays for this stage (it was started by dvc for this very stage, or it is a
  ``sh -c`` wrapper), the parent's parent, and so on up to the first process that does not relay (dvc itself);
* SIGTERM, whoever sends it, raises SystemExit in the main thread so that ``finally`` blocks and context managers
  run, and the process ends within ``GRACE_S`` seconds even if they hang or the main thread is stuck in C code.

Only this process and its own direct children are ever signalled.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("ftcot")

POLL_S = 0.5
GRACE_S = 5.0
EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM

_PR_SET_PDEATHSIG = 1
_SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"})
# dvc puts these in the environment of a stage's command only: a process whose initial environment holds the same
# values was started for this very stage (the shell, torchrun, ...); dvc itself has none, or an outer stage's.
_DVC_MARKERS = (b"DVC_ROOT", b"DVC_STAGE")
_MAX_LINKS = 8  # a bound on the walk up, far above any real chain (dvc, shell, torchrun, worker)

_installed = False
# Reentrant: a second SIGTERM may run the handler again, in the main thread, while the first one holds the lock.
_deadline_lock = threading.RLock()
_deadline_armed = False
_exiting = False  # SystemExit already raised by the SIGTERM handler

Link = tuple[int, int]  # (child, the parent it had at start)


def end_with_parent() -> None:
    """Make this process end when its parent, or the process an intermediate launcher relays for, dies."""
    global _installed
    if _installed:
        return
    if not sys.platform.startswith("linux"):
        log.debug("lifecycle: no parent watch on %s", sys.platform)
        return
    _installed = True
    _install_sigterm_handler()
    _set_pdeathsig(signal.SIGTERM)
    links = _chain()
    threading.Thread(target=_watch, args=(links,), name="ftcot-parent-watch", daemon=True).start()
    log.debug("lifecycle: pid %d ends with any of %s", os.getpid(), [parent for _, parent in links])


def _ppid(pid: int) -> int | None:
    """The parent pid of a live (or zombie) process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name, in parentheses, may itself hold spaces and parentheses: the fields start after the last ")".
    fields = raw.rpartition(b")")[2].split()
    return int(fields[1])  # fields: state, ppid, ...


def _argv(pid: int) -> list[bytes]:
    try:
        return [arg for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]
    except OSError:
        return []


def _markers(pid: int) -> tuple[bytes | None, ...] | None:
    """The DVC markers of a process's initial environment; None if it cannot be read (another user's process)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return tuple(env.get(name) for name in _DVC_MARKERS)


def _is_command_shell(argv: list[bytes]) -> bool:
    """A shell running ``-c`` (an interactive or login shell is not one, so its parent is never watched)."""
    if not argv or os.path.basename(argv[0]).decode(errors="replace") not in _SHELLS:
        return False
    for arg in argv[1:]:
        if not arg.startswith(b"-"):
            return False  # options end at the first operand
        if not arg.startswith(b"--") and b"c" in arg[1:]:
            return True
    return False


def _relays(pid: int, ours: tuple[bytes | None, ...]) -> bool:
    """Whether ``pid`` only relays for this stage, so that whoever launched it owns this process too."""
    if all(ours) and _markers(pid) == ours:
        return True
    return _is_command_shell(_argv(pid))


def _chain() -> list[Link]:
    """The links this process's life hangs on, from itself up to the first ancestor that does not relay."""
    ours = tuple(os.environb.get(name) for name in _DVC_MARKERS)
    parent = os.getppid()
    links = [(os.getpid(), parent)]
    while len(links) < _MAX_LINKS and parent > 1 and _relays(parent, ours):
        grandparent = _ppid(parent)
        if grandparent is None or grandparent <= 1:
            break  # a container's init, or a relay already orphaned before we looked: nothing to watch above it
        links.append((parent, grandparent))
        parent = grandparent
    return links


def _broken(links: list[Link]) -> Link | None:
    """The first link whose child no longer has the same parent.

    A child is reparented the moment its parent exits, even while the dead parent is an unreaped zombie, so this
    sees a death at once and cannot be fooled by pid reuse. Links are checked from this process up: once a link
    holds, its parent is known to be the very process recorded at start, so the next check is about the right one.
    """
    me = os.getpid()
    for child, parent in links:
        now = os.getppid() if child == me else _ppid(child)
        if now != parent:
            return child, parent
    return None


def _watch(links: list[Link]) -> None:
    while (broken := _broken(links)) is None:
        time.sleep(POLL_S)
    log.warning("launcher of this stage (pid %d) is gone: ending the stage (pid %d)", broken[1], os.getpid())
    _arm_deadline()
    os.kill(os.getpid(), signal.SIGTERM)  # the ordinary way out: SystemExit, finally blocks


def _set_pdeathsig(sig: signal.Signals) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.debug("lifecycle: prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as err:  # the watchdog thread still covers the direct parent
        log.debug("lifecycle: no prctl: %s", err)


def _install_sigterm_handler() -> None:
    # Python's default for SIGTERM is to die on the spot, skipping finally blocks; a handler someone else set is kept.
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    global _exiting
    _arm_deadline()
    if not _exiting:
        _exiting = True
        raise SystemExit(EXIT_CODE)
    # A second SIGTERM changes nothing: interrupting the cleanup under way would only lose more; the deadline holds.


def _arm_deadline() -> None:
    """Start the hard deadline, once."""
    global _deadline_armed
    with _deadline_lock:
        if _deadline_armed:
            return
        _deadline_armed = True
    # Daemon, so a clean exit does not wait for it; it still fires if the shutdown hangs joining worker threads.
    timer = threading.Timer(GRACE_S, _hard_exit)
    timer.daemon = True
    timer.start()
    atexit.register(_terminate_children)


def _hard_exit() -> None:
    # No logging here: its locks may be held by the thread that is stuck.
    os.write(2, f"ftcot: stage (pid {os.getpid()}) did not end within {GRACE_S:g}s of SIGTERM; exiting now\n".encode())
    _terminate_children()
    os._exit(EXIT_CODE)


def _terminate_children() -> None:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _ppid(int(entry.name)) == me:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except OSError:
                pass  # already gone
