"""What the worker offers its two doors: the control socket (``ControlTarget``) and the public
port (``PublicServer``'s api). Reads come from :mod:`.readout`; writes reach the worker's parts.

:class:`WorkerAPI` holds no state of its own beyond the metrics registry: it reads the
:class:`~.worker.Worker` it serves, and asks it to stop through its public methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from khronos_cli.bot.store import OutboxMessage
from khronos_cli.control.protocol import DEPENDENCIES
from khronos_cli.errors import JobDroppedError, KhronosError
from khronos_cli.runtime import readout
from khronos_cli.runtime.metrics import Metrics
from khronos_cli.runtime.wiring import Parts, guard
from khronos_cli.upstream.faults import DEFAULT_DURATION
from khronos_cli.upstream.llm import Turn

if TYPE_CHECKING:
    from khronos_cli.runtime.worker import Worker

__all__ = ["WorkerAPI"]

logger = logging.getLogger("khronos.worker")

ALERT_TEST_WAIT = 10.0  # seconds ``alerts test`` waits for Telegram to accept


class WorkerAPI:
    """The control socket's target and the public port's api, for one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._metrics = Metrics(lambda: readout.metrics_source(worker))

    # -- reads ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.worker.ready

    @property
    def webhook_secret(self) -> str | None:
        settings = self.worker.settings
        if settings.telegram_mode != "webhook":
            return None
        return settings.webhook_secret.reveal()

    def status(self) -> dict[str, Any]:
        return readout.status(self.worker)

    def breakers(self) -> dict[str, Any]:
        return readout.breakers(self.worker)

    def limiters(self) -> dict[str, Any]:
        return readout.limiters(self.worker)

    def outages(self) -> list[dict[str, Any]]:
        return readout.outages(self.worker)

    async def replica_list(self) -> list[dict[str, Any]]:
        return await readout.replica_list(self.worker)

    def metrics(self) -> bytes:
        return self._metrics.render()

    def event_stream(self) -> AsyncIterator[dict[str, Any]]:
        return self.worker.events.subscribe()

    async def backup_list(self) -> dict[str, Any]:
        return await self.worker.backups.listing()

    # -- control writes -------------------------------------------------------------------------

    async def force_breaker(
        self, name: str, state: str | None, *, reason: str, duration: float | None
    ) -> dict[str, Any]:
        breaker = self._parts().breakers[name]
        if state == "open":
            await breaker.force_open(reason, duration or 300.0)
        elif state == "closed":
            await breaker.force_closed(reason, duration or 300.0)
        else:
            await breaker.reset()
        return breaker.snapshot()

    def start_outage(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec.get("name")
        if name not in DEPENDENCIES:
            raise ValueError(f"'name' must be one of {', '.join(DEPENDENCIES)}")
        options = {k: spec[k] for k in ("probability", "status", "latency") if k in spec}
        mode, duration = str(spec.get("mode", "down")), spec.get("for", DEFAULT_DURATION)
        outage = self._parts().faults.start(name, mode, duration=duration, **options)
        logger.warning("outage started on %s: %s for %gs", name, outage.mode, outage.duration)
        return outage.to_dict()

    def stop_outages(self, name: str | None) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self._parts().faults.stop(name)]

    async def test_alert(self) -> dict[str, Any]:
        """``khronos alerts test``: one alert to every operator chat and the webhook, now."""
        alerts = self.worker.alerts
        if alerts is None:
            raise KhronosError("no [alerts] chat_ids nor webhook_url: nothing to send a test to")
        return await alerts.test(timeout=ALERT_TEST_WAIT)

    async def backup(self, path: str | None) -> dict[str, Any]:
        """``khronos backup [PATH]``: one copy of the live database (default: the backup dir)."""
        return await self.worker.backups.take(None if path is None else Path(path))

    async def stop_stream(
        self, *, force: bool, deadline: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        shutdown = self.worker.request_stop(deadline)
        if force:
            shutdown.force()
        async for event in shutdown.follow():
            yield event

    # -- the public port --------------------------------------------------------------------------

    async def chat(self, message: str, *, user: str) -> dict[str, str]:
        """``POST /chat``: the bot's own chain (Anthropic, OpenAI, the fallback text), through
        the ``global`` limiter that guards the public port's work (the seed's middleware);
        ``{"reply", "answered_by"}``."""
        parts = self._parts()
        turns: list[Turn] = [{"role": "user", "content": message}]
        reply = await parts.limiters["global"].schedule(lambda: parts.bot.ask(turns, key=user))
        return {"reply": reply.text, "answered_by": reply.answered_by}

    async def send(self, chat_id: int, text: str) -> dict[str, Any]:
        """``POST /messages``: queued durably, then sent through the outbox (and the
        ``telegram`` limiter); the request itself goes through the ``global`` limiter."""
        return await self._parts().limiters["global"].schedule(lambda: self._send(chat_id, text))

    async def _send(self, chat_id: int, text: str) -> dict[str, Any]:
        parts = self._parts()
        wait = parts.limiters["telegram"].room(chat_id, waiting=parts.outbox.queued_in(chat_id))
        if wait is not None:
            raise JobDroppedError("telegram", chat_id, wait, reason="that chat's queue is full")
        outbox_id = await guard(parts.breakers["database"])(
            lambda: parts.store.enqueue_message(chat_id, text, source="api")
        )
        message = OutboxMessage(outbox_id, chat_id, text, None, None, "api", 0, None, time.time())
        self.worker.spawn(parts.outbox.deliver([message]), f"send-{outbox_id}")
        return {"id": outbox_id}

    async def webhook(self, update: dict[str, Any]) -> None:
        await self._parts().poller.accept(update)

    def _parts(self) -> Parts:
        parts = self.worker.parts
        if parts is None:
            raise KhronosError("the worker is still starting; try again in a moment")
        return parts
