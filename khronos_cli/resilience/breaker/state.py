"""A breaker's state machine: closed, open and half-open, with the operator's overrides.

:class:`BreakerState` knows nothing of calls. It holds the state in pybreaker's vocabulary, why it
is so, the rolling window that decides a trip, the half-open permits, operator overrides (force
open / closed with an expiry and a reason, reset) and upstream retry-after holds. The call path
(:class:`~khronos_cli.resilience.breaker.breaker.CircuitBreaker`) reads its public fields and
reports each call's outcome to :meth:`BreakerState.settle`.

Transitions happen locally first, then are pushed to the storage in the background: a replica's
own calls never wait for Redis except for the half-open probe lease. What the storage says back
(a script's answer, or a change published by another replica) is adopted by
:meth:`BreakerState.adopt`; news from the channel or the poll is versioned (Redis ms of the change)
so a late poll cannot undo a newer local step.

Overrides expire lazily: :meth:`BreakerState.refresh` ends them when their time has passed (the
slow path, reads and snapshots call it). A forced-open breaker that expires lets the next call be
a half-open trial, so a forgotten drill heals itself only if the dependency is healthy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN

from khronos_cli.config import BreakerSettings
from khronos_cli.control.protocol import MAX_DURATION
from khronos_cli.resilience.breaker.events import Background, Listeners
from khronos_cli.resilience.breaker.storage import BreakerStorage, SharedState
from khronos_cli.resilience.breaker.window import RollingWindow

__all__ = ["CLOSED", "DEFAULT_FORCE_EXPIRY", "HALF_OPEN", "OPEN", "BreakerState", "Forced"]

CLOSED, OPEN, HALF_OPEN = STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN
DEFAULT_FORCE_EXPIRY = MAX_DURATION  # a forgotten drill heals itself after 15 minutes


@dataclasses.dataclass(slots=True)
class Forced:
    """An operator override: ``state`` until ``expires_at`` (on the breaker's clock)."""

    state: str
    reason: str
    expires_at: float


def _ceil_ms(seconds: float) -> float:
    """Rounded up to the millisecond, so that 0 means "due now", never "due in 0.4 ms"."""
    return max(0.0, math.ceil(seconds * 1000.0) / 1000.0)


class BreakerState:
    """The state, its transitions and overrides of one breaker (see the module docstring)."""

    __slots__ = (
        "_background",
        "_consecutive",
        "_seen_version",
        "_shared",
        "clock",
        "current",
        "forced",
        "generation",
        "hold_until",
        "lease",
        "listeners",
        "max_wait",
        "name",
        "next_trial_at",
        "opened_at",
        "probe_blocked_until",
        "reason",
        "settings",
        "storage",
        "streak",
        "trial_ok",
        "trials",
        "window",
    )

    def __init__(
        self,
        settings: BreakerSettings,
        storage: BreakerStorage,
        clock: Callable[[], float],
        listeners: Listeners,
        background: Background,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.storage = storage
        self.clock = clock
        self.listeners = listeners
        self.window = RollingWindow(settings.rolling_window, settings.buckets)
        wait = settings.half_open_max_wait
        self.max_wait = wait if wait is not None else settings.timeout + 1.0
        self.current = CLOSED
        self.reason = ""
        self.opened_at: float | None = None
        self.next_trial_at = self.hold_until = self.probe_blocked_until = 0.0
        self.forced: Forced | None = None
        self.lease = False  # this process holds the shared half-open probe lease
        self.generation = self.streak = self.trial_ok = 0
        self.trials: dict[asyncio.Task[Any], float] = {}  # half-open permits in use
        self._background = background
        self._consecutive = settings.policy == "consecutive"
        self._shared = storage.shared
        self._seen_version = 0
        storage.attach(self.name, self.adopt, self._storage_error)

    def describe(self, now: float, stats: dict[str, Any]) -> dict[str, Any]:
        """The snapshot's state keys (``stats`` goes between, for the key order), JSON-ready."""
        forced, wall = self.forced, time.time() - now
        next_trial_in = None
        if self.current is OPEN:
            next_at = forced.expires_at if forced is not None else self.next_trial_at
            next_trial_in = _ceil_ms(next_at - now)
        elif self.current is HALF_OPEN:
            next_trial_in = _ceil_ms(self.probe_blocked_until - now)
        return {
            "state": self.current,
            "reason": self.reason or None,
            "stats": stats,
            "opened_at": None if self.opened_at is None else round(wall + self.opened_at, 3),
            "next_trial_in": next_trial_in,
            "forced": None
            if forced is None
            else {
                "state": forced.state,
                "reason": forced.reason,
                "expires_at": round(wall + forced.expires_at, 3),
                "expires_in": round(max(0.0, forced.expires_at - now), 3),
            },
        }

    def emit(self, kind: str, **detail: object) -> None:
        self.listeners.emit(kind, self.current, detail=detail)

    # -- transitions: local first, then the storage in the background ---------------------------

    def trip(self, now: float, reason: str, *, publish: bool = True) -> None:
        if self.current is not OPEN:
            self.opened_at = now
        self.current = OPEN
        self.reason = reason
        self.next_trial_at = max(now + self.settings.reset_timeout, self.hold_until)
        self._new_generation()
        self.emit("open", reason=reason)
        if publish:
            self.push(self.storage.trip(self.name, self.settings.reset_timeout, reason))

    def to_half_open(self) -> None:
        self.current = HALF_OPEN
        self._new_generation()
        self.emit("half_open")

    def close(self, now: float, *, publish: bool = True) -> None:
        self.current = CLOSED
        self.reason = ""
        self.opened_at = None
        self.hold_until = 0.0
        self.streak = 0
        self.window.reset_counts()
        self._new_generation()
        self.emit("close")
        if publish:
            self.push(self.storage.close(self.name))

    def _new_generation(self) -> None:
        self.generation += 1
        self.trials.clear()
        self.trial_ok = 0
        self.lease = False
        self.probe_blocked_until = 0.0

    def trial_overdue(self, generation: int) -> None:
        """Scheduled when the first half-open trial starts: a trial still running after the
        maximum wait re-opens the breaker."""
        if generation == self.generation and self.current is HALF_OPEN and self.trials:
            self.trip(self.clock(), "half-open trial exceeded the maximum wait")

    def refresh(self, now: float) -> None:
        """End an expired operator override."""
        forced = self.forced
        if forced is not None and forced.expires_at <= now:
            self.forced = None
            if forced.state == OPEN:
                self.next_trial_at = now  # the next call is a half-open trial
            self.emit("forced", forced=None, expired=forced.state, reason=forced.reason)

    # -- outcomes ---------------------------------------------------------------------------------

    def settle(
        self,
        task: asyncio.Task[Any],
        ok: bool,
        now: float,
        latency: float,
        retry_after: float | None,
    ) -> None:
        """One call's outcome: the window, the streak, a half-open trial's verdict, a trip."""
        trial = bool(self.trials) and self.trials.pop(task, None) is not None
        if ok:
            self.streak = 0
            self.window.success(now, latency)
            if trial:
                self.trial_ok += 1
                if self.trial_ok >= self.settings.half_open_max_calls:
                    self.close(now)
            return
        self.streak += 1
        self.window.failure(now, latency)
        if trial:
            self.trip(now, "half-open trial failed")
        elif self.current is CLOSED and self._should_trip(now):
            self.trip(now, "error threshold reached")
        if retry_after is not None:
            self.hold_open(retry_after, "upstream retry-after")

    def release(self, task: asyncio.Task[Any]) -> None:
        """A call that counted for nothing (cancelled, ignored): give its permit back."""
        if self.trials.pop(task, None) is not None and not self.trials and self.lease:
            self.lease = False
            self.push(self.storage.release(self.name))

    def _should_trip(self, now: float) -> bool:
        self.refresh(now)
        if self.forced is not None:
            return False
        if self._consecutive:
            return self.streak >= self.settings.fail_max
        calls, failures = self.window.counts(now)
        settings = self.settings
        return calls >= settings.volume_threshold and (
            failures * 100.0 >= settings.error_threshold * calls
        )

    # -- the operator's word and the upstream's --------------------------------------------------

    async def force(self, state: str, reason: str, expires_in: float) -> None:
        """Force ``state`` (open: reject every call; closed: never trip) for ``expires_in``."""
        now = self.clock()
        self.forced = Forced(state, reason, now + expires_in)
        if state == OPEN:
            if self.current is not OPEN:
                self.trip(now, "forced open", publish=False)
            self.next_trial_at = now + expires_in
        elif self.current is not CLOSED:
            self.close(now, publish=False)
        self.emit("forced", forced=state, reason=reason, expires_in=expires_in)
        await self.store(self.storage.force(self.name, state, reason, expires_in))

    async def reset(self) -> None:
        """End any override or hold and close with empty window counts."""
        now = self.clock()
        if self.forced is not None:
            self.forced = None
            self.emit("forced", forced=None, reason="reset")
        if self.current is not CLOSED:
            self.close(now, publish=False)
        self.hold_until = 0.0
        self.window.reset_counts()
        await self.store(self.storage.reset(self.name))

    def hold_open(self, seconds: float, reason: str) -> None:
        """Open (or stay open) for at least ``seconds``. Forced closed stays closed."""
        now = self.clock()
        self.refresh(now)
        if self.forced is not None and self.forced.state == CLOSED:
            return
        self.hold_until = max(self.hold_until, now + seconds)
        if self.current is not OPEN:
            # Tripped by the hold alone: the upstream said when to come back, so the trial is
            # then, not a whole reset_timeout later (a 2 s flood wait must not cost 30 s).
            self.trip(now, reason, publish=False)
            self.next_trial_at = self.hold_until
        else:
            self.next_trial_at = max(self.next_trial_at, self.hold_until)
        self.reason = reason
        self.push(self.storage.hold(self.name, seconds, reason))

    # -- the storage ---------------------------------------------------------------------------

    def push(self, operation: Awaitable[SharedState | None]) -> None:
        if self._shared:
            self._background.spawn(self.store(operation))
        else:
            cast(Any, operation).close()

    async def store(self, operation: Awaitable[SharedState | None]) -> None:
        shared = await operation
        if shared is not None:
            self.adopt(shared, reply=True)

    def adopt(self, shared: SharedState, *, reply: bool = False) -> None:
        """Adopt the storage's word. Versions are the Redis time of the last change: news from
        the channel or the poll must be newer than what we applied (a poll repeating old news
        must not undo a local step such as open -> half-open); a script's answer to us
        (``reply``) may repeat it, but not be older (answers can arrive out of order), unless
        the storage has no record at all (version 0: lost or expired, so closed)."""
        if shared.version < self._seen_version and (shared.version or not reply):
            return
        if not reply and shared.version == self._seen_version:
            return
        self._seen_version = max(self._seen_version, shared.version)
        now = self.clock()
        self.forced = None
        if shared.forced is not None:
            expires_at = now + (shared.forced_expires_in or 0.0)
            self.forced = Forced(shared.forced, shared.forced_reason, expires_at)
        if shared.state == OPEN:
            if self.current is not OPEN:
                self.trip(now, shared.reason, publish=False)
            if shared.opened_at is not None:
                self.opened_at = now - max(0.0, time.time() - shared.opened_at)
            self.next_trial_at = now + (shared.retry_in or 0.0)
            self.reason = shared.reason
        elif shared.state == HALF_OPEN:
            if self.current is not HALF_OPEN:
                self.to_half_open()
            if not self.lease:
                self.probe_blocked_until = now + (shared.retry_in or 0.0)
        elif self.current is not CLOSED:
            self.close(now, publish=False)

    def _storage_error(self, error: BaseException | None) -> None:
        self.listeners.emit(
            "storage_error" if error is not None else "storage_ok", self.current, error
        )
