"""The instance on a state directory as its lock and its files tell it, for the CLI: is a
supervisor holding the directory, and reaching it by signal when no worker answers on the control
socket (a supervisor in ``starting``, ``backoff`` or ``crashloop`` has none to answer).

The proof that a pid is our supervisor is the directory's lock (``khronos.lock``, held by the
supervisor with ``flock`` for as long as it runs) together with ``supervisor.json`` naming that
pid: a stale file of a supervisor long gone is never signalled. Signals the supervisor acts on:

- ``SIGTERM``: stop (forwarded to a worker if one runs; in a backoff, no new worker is started);
- ``SIGUSR1``: restart the worker (a graceful stop, then a new worker at once, no backoff).

Standard library only: the CLI's commands use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from pathlib import Path

from khronos_cli import statedir
from khronos_cli.control.protocol import socket_path

TYPE_CHECKING = False  # the CLI's fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "RESTART_SIGNAL",
    "alive",
    "answers",
    "locked",
    "read_supervisor",
    "signal_supervisor",
    "supervisor_pid",
    "wait_gone",
]

RESTART_SIGNAL = signal.SIGUSR1


def alive(pid: object) -> bool:
    """``pid`` names a process that runs (a zombie waiting for its parent counts as gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:  # no /proc to read: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def locked(state_dir: Path) -> bool:
    """A process holds the state directory's lock: a supervisor runs there."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(state_dir / statedir.LOCK_FILE, flags)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_supervisor(state_dir: Path) -> dict[str, Any] | None:
    """The supervisor's state file (``supervisor.json``), or None."""
    return statedir.read_json(state_dir / statedir.SUPERVISOR_FILE)


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of the supervisor that runs on ``state_dir`` now, or None."""
    data = read_supervisor(state_dir) or {}
    pid = data.get("pid")
    if data.get("state") == "stopped" or not alive(pid) or not locked(state_dir):
        return None
    assert isinstance(pid, int)
    return pid


def answers(state_dir: Path) -> bool:
    """Something accepts connections on the state directory's control socket."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(os.fspath(socket_path(state_dir)))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # polling a process we are not the parent of: no event to wait on
    return True


def signal_supervisor(pid: int, signum: int) -> bool:
    """Send ``signum`` to the supervisor; False when it was already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
        return True
    return False
