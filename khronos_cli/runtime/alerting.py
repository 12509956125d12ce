"""The alerts in the worker: what they watch, where they go, and what the last run left to say.

:func:`start_alerts` builds :class:`~khronos_cli.alerts.engine.Alerts` when ``[alerts]`` names a
chat or a webhook: it listens to the event hub (breakers; ``backup`` failures), probes Redis and
the outbox each tick, and says at start how the previous run ended when that was not a clean stop
(and that the worker is up again after a crash loop: the supervisor told the crash loop itself,
see :mod:`khronos_cli.alerts.direct`). Messages are recorded in the outbox and sent by it, so
they go at bulk priority through the ``telegram`` limiter and breaker, after users' answers.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

from khronos_cli import statedir
from khronos_cli.alerts import direct
from khronos_cli.alerts.engine import Alerts
from khronos_cli.bot.store import OutboxMessage
from khronos_cli.redaction import Scrubber
from khronos_cli.runtime.wiring import Parts, guard

if TYPE_CHECKING:
    from khronos_cli.runtime.worker import Worker

__all__ = ["OutboxSink", "start_alerts"]


class OutboxSink:
    """Alert messages through the outbox: recorded (database breaker), then delivered."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def enqueue(self, chat_id: int, text: str) -> int:
        store = self.parts.store
        return await guard(self.parts.breakers["database"])(
            lambda: store.enqueue_message(chat_id, text, source="alert")
        )

    async def send(self, outbox_id: int, chat_id: int, text: str) -> bool:
        message = OutboxMessage(outbox_id, chat_id, text, None, None, "alert", 0, None, time.time())
        return await self.parts.outbox.deliver([message])


def start_alerts(worker: Worker) -> Alerts | None:
    """The worker's alerts, running (None when ``[alerts]`` sends nowhere)."""
    settings, parts = worker.settings, worker.parts
    if not settings.alerts.enabled or parts is None:
        return None
    alerts = Alerts(
        settings.alerts,
        OutboxSink(parts),
        label=direct.label(settings),
        spawn=worker.spawn,
        scrub=Scrubber(settings.secrets),
    )
    worker.events.add_listener(alerts.on_event)
    limits = settings.alerts
    outbox = parts.outbox

    def redis() -> str | None:
        return next((reason for reason in worker.reasons if "redis" in reason), None)

    def backlog() -> str | None:
        queued = outbox.queued
        if queued < limits.backlog:
            return None
        return f"{queued} messages waiting to be sent (threshold {limits.backlog})"

    def oldest() -> str | None:
        since = outbox.oldest()
        if since is None or time.time() - since < limits.oldest_pending:
            return None
        return f"a message has waited {time.time() - since:.0f} s to be sent"

    def telegram() -> str | None:
        down = outbox.unreachable
        return None if down is None else down[1]

    alerts.watch("telegram:sends", telegram)
    alerts.watch("degraded:redis", redis)
    alerts.watch("backlog:outbox", backlog)
    alerts.watch("oldest:outbox", oldest)
    previous_run(
        alerts, worker.previous, statedir.read_json(worker.state_dir / statedir.SUPERVISOR_FILE)
    )
    worker.tasks.append(asyncio.create_task(alerts.run(), name="alerts"))
    return alerts


def previous_run(
    alerts: Alerts, previous: dict[str, Any] | None, supervisor: dict[str, Any] | None
) -> None:
    """Tell a stop that was not clean (a kill, a crash, a forced stop), and a start after a
    crash loop (the supervisor's ``failures`` at or past ``crashloop_after``)."""
    exit_ = (supervisor or {}).get("last_exit") or {}
    failures = int((supervisor or {}).get("failures") or 0)
    if previous is not None and previous.get("result") == "killed":
        uptime, signum, code = exit_.get("uptime_s") or 0.0, exit_.get("signal"), exit_.get("code")
        if signum:
            how = f"the worker was killed by {signal.Signals(signum).name} after {uptime:.1f} s"
        elif code not in (None, 0):
            how = f"the worker exited with code {code} after {uptime:.1f} s"
        else:
            how = "the worker ended without a stop report (killed, or the machine went down)"
        alerts.notice("unclean", "once", f"{how}; pid {previous.get('pid')}")
    elif previous is not None and previous.get("result") == "forced":
        hung = previous.get("hung_step")
        alerts.notice(
            "unclean",
            "once",
            f"the last stop was forced ({previous.get('reason') or 'deadline'})"
            + (f", step {hung} hung" if hung else ""),
        )
    crashloop_after = (supervisor or {}).get("crashloop_after")
    if isinstance(crashloop_after, int) and failures >= crashloop_after:
        alerts.notice("restarted", "once", f"after {failures} failed starts in a row")
