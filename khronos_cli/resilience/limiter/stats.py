"""What a limiter tells the world: counts, events and the rate of starts over the last minute.

Counts follow Bottleneck's job states (RECEIVED → QUEUED → RUNNING → EXECUTING → DONE). The
live states (queued, running, executing) are gauges the scheduler keeps; the rest are totals
since start: ``received``, ``done``, ``dropped``, ``failed``, ``retried``.

The rate of starts is kept in a ring of 60 one-second buckets indexed by the second: O(1) per
start, no allocation, and ``history()`` is the per-second sparkline of the last minute. Listener
errors are logged and isolated: an observer can never break the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

__all__ = ["EVENTS", "LimiterEvent", "LimiterStats", "Listener"]

EVENTS: Final = frozenset(
    {"queued", "dropped", "executing", "done", "failed", "retry", "idle", "halt"}
)
_HISTORY: Final = 60
_RATE_WINDOW: Final = 10

_log = logging.getLogger("khronos.limiter")


@dataclass(frozen=True, slots=True)
class LimiterEvent:
    """One thing that happened to a job (or, for ``idle`` and ``halt``, to the limiter)."""

    event: str
    limiter: str
    key: Hashable = None
    priority: int | None = None
    weight: int | None = None
    error: BaseException | None = None
    seconds: float | None = None  # retry: delay before the retry; halt: its length


Listener = Callable[[LimiterEvent], object]


class LimiterStats:
    """Totals, the per-second start history, and the listeners of one limiter."""

    __slots__ = (
        "_listeners",
        "_seconds",
        "_starts",
        "done",
        "dropped",
        "failed",
        "received",
        "retried",
    )

    def __init__(self) -> None:
        self.received = 0
        self.done = 0
        self.dropped = 0
        self.failed = 0
        self.retried = 0
        self._starts = [0] * _HISTORY
        self._seconds = [-1] * _HISTORY
        self._listeners: dict[str, list[Listener]] = {}

    def started(self, now: float) -> None:
        """Count one job start at ``now`` (seconds on the limiter's clock)."""
        second = int(now)
        slot = second % _HISTORY
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._starts[slot] = 0
        self._starts[slot] += 1

    def history(self, now: float) -> list[int]:
        """Starts per second for the last 60 whole seconds, oldest first (now excluded)."""
        second = int(now)
        out = []
        for past in range(second - _HISTORY, second):
            slot = past % _HISTORY
            out.append(self._starts[slot] if self._seconds[slot] == past else 0)
        return out

    def rate(self, now: float) -> float:
        """Starts per second over the last 10 whole seconds."""
        return sum(self.history(now)[-_RATE_WINDOW:]) / _RATE_WINDOW

    def on(self, event: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener(LimiterEvent)`` on ``event``; returns a function that unsubscribes."""
        if event not in EVENTS:
            raise ValueError(f"unknown limiter event {event!r}: expected one of {sorted(EVENTS)}")
        listeners = self._listeners.setdefault(event, [])
        listeners.append(listener)
        return lambda: listeners.remove(listener) if listener in listeners else None

    def wants(self, event: str) -> bool:
        """Whether anyone listens to ``event`` (so the hot path builds no event for nobody)."""
        return event in self._listeners and bool(self._listeners[event])

    def emit(self, event: LimiterEvent) -> None:
        """Deliver ``event``; a failing listener is logged and the others still run."""
        for listener in tuple(self._listeners.get(event.event, ())):
            try:
                listener(event)
            except Exception:
                _log.exception("limiter %s: %s listener failed", event.limiter, event.event)
