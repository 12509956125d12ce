"""What ``khronos status`` reports: the supervisor's state file and the worker's own view, merged.

Standard library and the control client only, so the CLI's fast path can use it too. Nothing in a
state directory another user controls is believed: its files could say anything (exit 1).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from khronos_cli import statedir
from khronos_cli.control.client import ControlClient
from khronos_cli.control.protocol import socket_path
from khronos_cli.errors import ControlError, NotRunningError

__all__ = ["gather"]


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gather(state_dir: Path) -> dict[str, Any]:
    """What `status --json` prints; raises NotRunningError when nothing runs there."""
    try:
        statedir.check(state_dir)
    except statedir.StateDirError as exc:
        raise ControlError(f"not trusting it: {exc}") from None

    def read(name: str) -> dict[str, Any] | None:
        return statedir.read_json(state_dir / name)

    supervisor = read(statedir.SUPERVISOR_FILE)
    if supervisor and (supervisor.get("state") == "stopped" or not _alive(supervisor.get("pid"))):
        supervisor = None
    worker: dict[str, Any] | None = None
    try:
        with ControlClient(state_dir) as control:
            worker = control.get("/status")
    except NotRunningError:
        if supervisor is None:
            raise
    worker = worker or {}
    state = worker.get("state", "starting")
    if supervisor and supervisor.get("state") in ("starting", "backoff", "crashloop", "stopping"):
        state = supervisor["state"]
    started = (supervisor or {}).get("started_at") or worker.get("started_at")
    return {
        "pid": (supervisor or {}).get("pid") or worker.get("pid"),
        "worker_pid": (supervisor or {}).get("worker_pid") or worker.get("pid"),
        "supervised": supervisor is not None,
        "state": state,
        "uptime_s": round(time.time() - started, 1) if started else None,
        "restarts": (supervisor or {}).get("restarts", 0),
        "http_port": worker.get("http_port"),
        "http_host": worker.get("http_host"),
        "socket": str(socket_path(state_dir)),
        "state_dir": str(state_dir),
        "backend": worker.get("backend"),
        "poll_problem": worker.get("poll_problem"),
        "reasons": worker.get("reasons") or [],
        "lease": worker.get("lease"),
        "last_shutdown": worker.get("last_shutdown") or read(statedir.REPORT_FILE),
        "last_exit": (supervisor or {}).get("last_exit"),
        "next_start_at": (supervisor or {}).get("next_start_at"),
        "last_lines": (supervisor or {}).get("last_lines", []) if state == "crashloop" else [],
        "worker": worker,
    }
