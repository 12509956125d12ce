"""What ``khronos status`` reports: the supervisor's state file and the worker's own view, merged
into a health summary.

Standard library and the control client only, so the CLI's fast path can use it too. Nothing in a
state directory another user controls is believed: its files could say anything (exit 1).

The summary lifts to the top what an operator asks first: the state and why (``reasons`` when
degraded; ``waiting_for`` when not ready yet: the part of the start the worker is in, the step of
its stop, the worker that does not answer yet, or the next restart), each breaker's state, the
active outages keyed by name, the outbox backlog (``messages_queued``), the jobs, Redis and the
poller lease, and how the last run ended (``last_shutdown``). The worker's whole view stays
under ``worker``. When nothing runs but the state directory has run before, the state is
``stopped`` and ``last_shutdown`` says how that run ended (the CLI still exits 3); a directory
that never ran is :class:`NotRunningError`.
"""

from __future__ import annotations

import time
from pathlib import Path

from khronos_cli import statedir
from khronos_cli.control.client import ControlClient
from khronos_cli.control.instance import alive
from khronos_cli.control.protocol import socket_path
from khronos_cli.errors import ControlError, NotRunningError

TYPE_CHECKING = False  # the CLI's fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["STOPPED", "gather"]

STOPPED = "stopped"  # nothing runs on the state directory, which has run before
_SUPERVISOR_STATES = ("starting", "backoff", "crashloop", "stopping", "restarting")


def gather(state_dir: Path) -> dict[str, Any]:
    """What ``status --json`` prints; raises NotRunningError when nothing ever ran there."""
    try:
        statedir.check(state_dir)
    except statedir.StateDirError as exc:
        raise ControlError(f"not trusting it: {exc}") from None

    def read(name: str) -> dict[str, Any] | None:
        return statedir.read_json(state_dir / name)

    written = read(statedir.SUPERVISOR_FILE)
    supervisor = written
    if supervisor and (supervisor.get("state") == STOPPED or not alive(supervisor.get("pid"))):
        supervisor = None
    worker: dict[str, Any] | None = None
    try:
        with ControlClient(state_dir) as control:
            worker = control.get("/status")
    except NotRunningError:
        if supervisor is None:
            last = _last_run(state_dir)
            if last is None and written is None:
                raise
            return _stopped(state_dir, last, written)
    answered = worker is not None
    worker = worker or {}
    sup = supervisor or {}
    state = worker.get("state", "starting")
    if sup.get("state") in _SUPERVISOR_STATES:
        state = sup["state"]
    started = sup.get("started_at") or worker.get("started_at")
    return {
        "pid": sup.get("pid") or worker.get("pid"),
        "worker_pid": sup.get("worker_pid") or worker.get("pid"),
        "supervised": supervisor is not None,
        "state": state,
        "waiting_for": _waiting_for(state, sup, worker, answered),
        "uptime_s": round(time.time() - started, 1) if started else None,
        "restarts": sup.get("restarts", 0),
        "http_port": worker.get("http_port"),
        "http_host": worker.get("http_host"),
        "probe_port": worker.get("probe_port"),
        "socket": str(socket_path(state_dir)),
        "state_dir": str(state_dir),
        "backend": worker.get("backend"),
        "poll_problem": worker.get("poll_problem"),
        "reasons": worker.get("reasons") or [],
        "breakers": worker.get("breakers") or {},
        "outages": worker.get("outages") or {},
        "jobs_active": worker.get("jobs_active"),
        "messages_queued": worker.get("messages_queued"),
        "redis": worker.get("redis"),
        "lease": worker.get("lease"),
        "backup": worker.get("backup"),
        "last_shutdown": worker.get("last_shutdown") or read(statedir.REPORT_FILE),
        "last_exit": sup.get("last_exit"),
        "next_start_at": sup.get("next_start_at"),
        "last_lines": sup.get("last_lines", []) if state == "crashloop" else [],
        "worker": worker,
    }


def _waiting_for(
    state: str, supervisor: dict[str, Any], worker: dict[str, Any], answered: bool
) -> str | None:
    """Why the instance is not ready: the worker's own answer, else the supervisor's view."""
    if state in ("backoff", "crashloop"):
        left = max(0.0, float(supervisor.get("next_start_at") or 0) - time.time())
        last = supervisor.get("last_exit") or {}
        exited = f"exit {last['code']}" if last.get("code") is not None else "an exit"
        return f"the next start in {left:.0f}s, after {exited}"
    if answered:
        reply = worker.get("waiting_for")
        return str(reply) if reply else None
    pid = supervisor.get("worker_pid")
    who = f"the worker (pid {pid})" if pid else "the worker"
    if state in ("stopping", "restarting"):
        return f"{who} to exit"
    if state == "starting":
        return f"{who} to open its control socket"
    return None


def _last_run(state_dir: Path) -> dict[str, Any] | None:
    """How the last run on ``state_dir`` ended: its report, or ``killed`` when the marker of a
    run whose process is gone is still there (the worker reads its previous run the same way)."""
    return statedir.previous_run(state_dir, alive=alive)


def _stopped(
    state_dir: Path, last: dict[str, Any] | None, supervisor: dict[str, Any] | None
) -> dict[str, Any]:
    """The summary of an instance that ran and does not run now."""
    sup = supervisor or {}
    return {
        "pid": None,
        "worker_pid": None,
        "supervised": False,
        "state": STOPPED,
        "waiting_for": None,
        "uptime_s": None,
        "restarts": sup.get("restarts", 0),
        "http_port": None,
        "http_host": None,
        "probe_port": None,
        "socket": str(socket_path(state_dir)),
        "state_dir": str(state_dir),
        "backend": None,
        "poll_problem": None,
        "reasons": [],
        "breakers": {},
        "outages": {},
        "jobs_active": None,
        "messages_queued": None,
        "redis": None,
        "lease": None,
        "last_shutdown": last,
        "last_exit": sup.get("last_exit"),
        "next_start_at": None,
        "last_lines": [],
        "worker": {},
    }
