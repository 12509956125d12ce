"""What a breaker tells the world: events, their listeners, and its background tasks.

Listeners are called synchronously where the event happens (a call's exit, a transition); an
async listener runs as a task, and so does every other piece of background work a breaker starts
(a storage update after a transition). A listener that raises is logged and never breaks a call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

__all__ = ["EVENTS", "Background", "BreakerEvent", "Listener", "Listeners"]

EVENTS = frozenset(
    {
        "fire",
        "success",
        "failure",
        "timeout",
        "reject",
        "fallback",
        "open",
        "half_open",
        "close",
        "forced",
        "health_check_failed",
        "storage_error",
        "storage_ok",
    }
)

log = logging.getLogger("khronos.breaker")
Listener = Callable[["BreakerEvent"], object]


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerEvent:
    """What a listener receives; ``state`` is the breaker's state after the event."""

    kind: str
    breaker: str
    state: str
    error: BaseException | None = None
    latency: float | None = None
    detail: Mapping[str, object] = dataclasses.field(default_factory=dict)


class Background:
    """Tasks a breaker started and must let finish before it closes."""

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` as a task; without a running loop (a sync caller) it is dropped."""
        try:
            task = asyncio.get_running_loop().create_task(cast(Any, work))
        except RuntimeError:
            cast(Any, work).close()
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def wait(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)


_PER_CALL = frozenset({"fire", "success", "reject"})


class Listeners:
    """One breaker's listeners. ``per_call`` is true exactly when someone listens to an event
    of every call (``fire``, ``success``, ``reject``), which the call path checks before
    building one: the worker listens to transitions only."""

    __slots__ = ("background", "entries", "name", "per_call")

    def __init__(self, name: str, background: Background) -> None:
        self.name = name
        self.background = background
        self.entries: list[tuple[Listener, frozenset[str] | None]] = []
        self.per_call = False

    def add(self, listener: Listener, *kinds: str) -> None:
        unknown = set(kinds) - EVENTS
        if unknown:
            raise ValueError(f"unknown breaker events {sorted(unknown)}; known: {sorted(EVENTS)}")
        self.entries.append((listener, frozenset(kinds) if kinds else None))
        self._recount()

    def remove(self, listener: Listener) -> None:
        self.entries[:] = [entry for entry in self.entries if entry[0] is not listener]
        self._recount()

    def _recount(self) -> None:
        self.per_call = any(kinds is None or kinds & _PER_CALL for _, kinds in self.entries)

    def emit(
        self,
        kind: str,
        state: str,
        error: BaseException | None = None,
        latency: float | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        if not self.entries:
            return
        event = BreakerEvent(kind, self.name, state, error, latency, detail or {})
        for listener, kinds in self.entries:
            if kinds is not None and kind not in kinds:
                continue
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    self.background.spawn(result)
            except Exception:
                log.exception("breaker %r: listener %r failed on %r", self.name, listener, kind)
