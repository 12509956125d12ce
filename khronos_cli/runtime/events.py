"""The worker's event stream and its log: breaker transitions, limiter drops and halts, outages.

Other parts publish too: a failed backup is ``publish("backup", kind="failed", error=...)``,
which the alerts (:mod:`khronos_cli.alerts`, a listener) turn into an alert to the operator.

Publishers call :meth:`EventHub.publish` synchronously (from listeners); each subscriber of the
control socket's ``GET /events`` has its own bounded queue. A slow subscriber loses its oldest
events; it never slows the worker down.

Every event is also a log line an operator can act on (:class:`EventLog`): a breaker opening is
a warning with its reason, half-open and close are info (close says how long it was open),
forcing is a warning with the operator's reason; a 429 halt says which chat (or every chat) and
for how long; drops are counted and logged at most once per :data:`DROP_LOG_EVERY` seconds per
limiter, so a flood of refusals is one line with a count, not a line each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from khronos_cli.runtime.wiring import Parts

__all__ = ["DROP_LOG_EVERY", "EventHub", "EventLog", "listen"]

DROP_LOG_EVERY = 10.0
logger = logging.getLogger("khronos.events")
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "event",
    "kind",
}


class EventLog:
    """Turns published events into log lines."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._opened: dict[str, float] = {}
        self._drops: dict[str, int] = {}
        self._drops_told: dict[str, float] = {}
        self._extra: dict[str, Any] = {}

    def __call__(self, topic: str, fields: dict[str, Any]) -> None:
        # The event's own fields ride on the record: a JSON log line carries them as keys.
        self._extra = {"event": f"{topic}_{fields.get('kind')}"}
        self._extra.update((k, v) for k, v in fields.items() if k not in _RESERVED)
        if topic == "breaker":
            self._breaker(fields)
        elif topic == "limiter":
            self._limiter(fields)  # outages log themselves (upstream.faults)

    def _breaker(self, event: dict[str, Any]) -> None:
        name, kind = event.get("breaker", "?"), event.get("kind")
        if kind == "open":
            self._opened.setdefault(name, self._clock())
            logger.warning(
                "breaker %s opened: %s", name, event.get("reason") or "tripped", extra=self._extra
            )
        elif kind == "half_open":
            logger.info(
                "breaker %s half-open: letting a trial call through", name, extra=self._extra
            )
        elif kind == "close":
            since = self._opened.pop(name, None)
            took = "" if since is None else f" after {self._clock() - since:.1f}s open"
            logger.info("breaker %s closed again%s", name, took, extra=self._extra)
        elif kind == "forced":
            forced = event.get("forced")
            if forced is None:
                logger.warning(
                    "breaker %s: operator override ended (%s)",
                    name,
                    event.get("reason"),
                    extra=self._extra,
                )
            else:
                logger.warning(
                    "breaker %s forced %s for %ss by the operator: %s",
                    name,
                    forced,
                    event.get("expires_in"),
                    event.get("reason"),
                    extra=self._extra,
                )
        elif kind == "storage_error":
            logger.warning(
                "breaker %s: shared state unreachable, deciding locally", name, extra=self._extra
            )
        elif kind == "storage_ok":
            logger.info("breaker %s: shared state reachable again", name, extra=self._extra)

    def _limiter(self, event: dict[str, Any]) -> None:
        name, kind = str(event.get("limiter", "?")), event.get("kind")
        if kind == "halt":
            key = event.get("key")
            scope = "every key" if key in (None, "None") else f"key {key}"
            logger.warning(
                "limiter %s: %s halted for %.1fs (the upstream answered 429)",
                name,
                scope,
                float(event.get("seconds") or 0.0),
                extra=self._extra,
            )
        elif kind == "dropped":
            self._drops[name] = self._drops.get(name, 0) + 1
            now = self._clock()
            if now - self._drops_told.get(name, -DROP_LOG_EVERY) >= DROP_LOG_EVERY:
                count = self._drops.pop(name)
                self._drops_told[name] = now
                logger.warning(
                    "limiter %s dropped %d job%s (queue full; callers got 429)",
                    name,
                    count,
                    "" if count == 1 else "s",
                    extra=self._extra,
                )


class EventHub:
    def __init__(
        self,
        *,
        capacity: int = 1000,
        log: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._log = log or EventLog()
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.published = 0

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``listener(topic, fields)`` on every event, synchronously (the alerts)."""
        self._listeners.append(listener)

    def publish(self, topic: str, /, **fields: Any) -> None:
        event = {"event": topic, "at": round(time.time(), 3), **fields}
        self._log(topic, fields)
        for listener in self._listeners:
            listener(topic, fields)
        self.published += 1
        for queue in self._queues:
            if queue.full():  # drop the oldest: a slow reader never slows the worker
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Events from now on, until the subscriber goes away."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.capacity)
        self._queues.add(queue)
        try:
            yield {"event": "subscribed", "at": round(time.time(), 3)}
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)


def listen(parts: Parts, hub: EventHub, *, on_change: Callable[[], object]) -> None:
    """Publish on ``hub`` what the parts tell: breaker transitions (then ``on_change()``, an open
    breaker degrades the worker), limiter drops and halts, outages started and ended."""
    publish = hub.publish
    transitions = ("open", "half_open", "close", "forced", "storage_error", "storage_ok")

    def on_breaker(e: Any) -> None:
        detail = {k: v for k, v in e.detail.items() if isinstance(v, str | int | float | None)}
        publish("breaker", breaker=e.breaker, kind=e.kind, state=e.state, **detail)
        on_change()

    def on_limiter(e: Any) -> None:
        publish("limiter", limiter=e.limiter, kind=e.event, key=str(e.key), seconds=e.seconds)

    def on_outage(e: Any) -> None:
        outage = e.outage
        publish("outage", kind=e.kind, name=outage.name, mode=outage.mode, cause=e.cause)

    for breaker in parts.breakers.values():
        breaker.add_listener(on_breaker, *transitions)
    for limiter in parts.limiters.values():
        limiter.on("dropped", on_limiter)
        limiter.on("halt", on_limiter)
    parts.faults.add_listener(on_outage)
