"""What the control socket reads from the worker: its status, breakers, limiters, outages and the
replicas' snapshots.

Functions of a :class:`Readable` (the worker), reading only what it shows in public, so the
worker's module keeps its lifecycle and this one keeps the operator's view. ``status`` is the
health summary ``khronos status`` draws: the state and why (``reasons`` when degraded,
``waiting_for`` while starting or stopping), every breaker's state, the active outages keyed by
name, the outbox backlog, jobs, Redis and the poller lease, and how the previous run ended.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

from khronos_cli.control.protocol import STEP_TITLES, socket_path
from khronos_cli.errors import KhronosError
from khronos_cli.resilience.redis_client import REDIS_ERRORS

if TYPE_CHECKING:
    from pathlib import Path

    from khronos_cli.alerts.engine import Alerts
    from khronos_cli.config import Settings
    from khronos_cli.runtime.backup import Backups
    from khronos_cli.runtime.http import PublicServer
    from khronos_cli.runtime.replicas import Replicas
    from khronos_cli.runtime.shutdown import Shutdown
    from khronos_cli.runtime.wiring import Parts

__all__ = ["Readable", "breakers", "limiters", "outages", "replica_list", "status"]


class Readable(Protocol):
    """The worker as this module sees it."""

    settings: Settings
    state_dir: Path
    started_at: float
    parts: Parts | None
    public: PublicServer | None
    replicas: Replicas | None
    shutdown: Shutdown | None
    previous: dict[str, Any] | None
    alerts: Alerts | None
    backups: Backups

    @property
    def current_state(self) -> str: ...
    @property
    def reasons(self) -> list[str]: ...
    @property
    def backend(self) -> str: ...
    @property
    def polling(self) -> bool: ...
    @property
    def ready(self) -> bool: ...


def status(worker: Readable) -> dict[str, Any]:
    """``GET /status``: what ``khronos status --json`` shows under ``worker`` (and lifts)."""
    parts, public, replicas = worker.parts, worker.public, worker.replicas
    return {
        "pid": os.getpid(),
        "state": worker.current_state,
        "started_at": worker.started_at,
        "http_host": worker.settings.http_host,
        "http_port": public.port if public else None,
        "probe_port": public.probe_port if public else None,
        "socket": str(socket_path(worker.state_dir)),
        "backend": worker.backend,
        "mode": worker.settings.telegram_mode,
        "supervised": os.environ.get("KHRONOS_SUPERVISED") == "1",
        "last_shutdown": worker.previous,
        "jobs_active": parts.jobs.active if parts else 0,
        "updates_accepted": parts.poller.accepted if parts else 0,
        "updates_duplicate": parts.poller.duplicates if parts else 0,
        "messages_sent": parts.outbox.sent if parts else 0,
        "messages_failed": parts.outbox.failed if parts else 0,
        "messages_queued": parts.outbox.queued if parts else 0,
        "chats_migrated": len(parts.bot.migrations | parts.outbox.migrations) if parts else 0,
        "answered": dict(parts.bot.answered) if parts else {},
        "updates_skipped": parts.bot.skipped if parts else 0,
        "updates_rejected": public.updates_rejected if public else 0,
        "bot_username": parts.bot.identity.username if parts and parts.bot.identity else None,
        "poll_problem": parts.poller.problem if parts else None,
        "offset": parts.poller.offset if parts else None,
        "replica": replicas.id if replicas else None,
        "poller": worker.polling,
        "replicas": replicas.count if replicas else 1,
        "redis": None if replicas is None else ("ok" if replicas.healthy else "lost"),
        "lease": _lease(worker),
        "reasons": worker.reasons,
        "waiting_for": waiting_for(worker),
        "breakers": _breaker_states(worker),
        "outages": {str(o["name"]): o for o in outages(worker)},
        "alerts": None if worker.alerts is None else worker.alerts.snapshot(),
        "backup": worker.backups.snapshot(),
    }


def waiting_for(worker: Readable) -> str | None:
    """Why a worker that is not ready is not: the part of its start it is in, or the step of its
    stop and the work that step waits for. None when ready (or degraded: see ``reasons``)."""
    state, parts = worker.current_state, worker.parts
    redis = worker.settings.redis_url is not None
    if state == "starting":
        if parts is None:
            return "the database" + (", Redis" if redis else "") + " and the clients to open"
        if worker.public is None:
            return "the breakers' state to load" + (" from Redis" if redis else "")
        webhook = worker.settings.telegram_mode == "webhook"
        return "kept messages and journaled updates to load" + (
            ", then the webhook to be set" if webhook else ""
        )
    if state == "stopping" and worker.shutdown is not None:
        started = [e for e in worker.shutdown.events if e.get("event") == "step_started"]
        if not started:
            return "the stop to begin"
        step = started[-1]
        name = str(step.get("name"))
        doing = f"step {step.get('step')} ({STEP_TITLES.get(name, name)}) to end"
        if parts is None:
            return doing
        jobs, queued = parts.jobs.active, parts.outbox.queued
        return f"{doing}: {jobs} job{'s' * (jobs != 1)} running, {queued} queued to send"
    return None


def _lease(worker: Readable) -> str | None:
    """The poller lease: ``held``, ``standby``, ``alone`` (polling while Redis has not answered
    since the start), or None (no Redis, or webhook mode)."""
    replicas = worker.replicas
    if replicas is None or worker.settings.telegram_mode != "polling":
        return None
    return "alone" if replicas.alone else "held" if replicas.leader else "standby"


def _breaker_states(worker: Readable) -> dict[str, Any]:
    """Each breaker's state in brief: why it is open, when it next tries, forced or not."""
    keep = ("state", "reason", "next_trial_in", "forced")
    return {name: {k: snap.get(k) for k in keep} for name, snap in breakers(worker).items()}


def breakers(worker: Readable) -> dict[str, Any]:
    return worker.parts.breakers.snapshot() if worker.parts else {}


def limiters(worker: Readable) -> dict[str, Any]:
    return worker.parts.limiters.snapshot() if worker.parts else {}


def outages(worker: Readable) -> list[dict[str, Any]]:
    """The active outages (``GET /outages``; the CLI keys them by name)."""
    return [o.to_dict() for o in worker.parts.faults.active()] if worker.parts else []


def metrics_source(worker: Readable) -> dict[str, Any]:
    """What ``GET /metrics`` draws from: the snapshots, each breaker's latency histogram since
    start, and the public port's refusals."""
    parts, public = worker.parts, worker.public
    return {
        "breakers": breakers(worker),
        "limiters": limiters(worker),
        "worker": {**status(worker), "ready": worker.ready},
        "latency": {n: b.machine.window.cumulative() for n, b in parts.breakers.items()}
        if parts
        else {},
        "rejected": dict(public.rejected) if public else {},
    }


def replica_snapshot(worker: Readable) -> dict[str, Any]:
    """What each replica publishes about itself every second."""
    return {"status": status(worker), "breakers": breakers(worker), "limiters": limiters(worker)}


async def replica_list(worker: Readable) -> list[dict[str, Any]]:
    """Every live replica's snapshot; just this one without Redis."""
    if worker.replicas is None:
        return [{**replica_snapshot(worker), "replica": "local", "leader": True}]
    try:
        return await worker.replicas.all()
    except REDIS_ERRORS as exc:
        raise KhronosError(f"redis is unreachable: {exc}") from None
