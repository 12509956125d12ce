"""A circuit breaker's state machine, stats and operator controls, under the call path.

:class:`BreakerStateMachine` holds everything about a breaker except how a call goes through it
(that is :class:`~khronos_cli.resilience.breaker.CircuitBreaker`, its subclass): the state in
pybreaker's vocabulary (``closed``, ``open``, ``half-open``) and its transitions, the lifetime
counters and the :class:`RollingWindow`, events and listeners, operator overrides (force open /
closed with an expiry and a reason, reset), upstream retry-after holds, the periodic health check,
and the JSON snapshot.

Transitions happen locally first, then are pushed to the storage in the background: a replica's
own calls never wait for Redis except for the half-open probe lease. What the storage says back
(a script's answer, or a change published by another replica) is adopted by
:meth:`_apply_shared`; news from the channel or the poll is versioned (Redis ms of the change) so a
late poll cannot undo a newer local step.

Overrides expire lazily: the slow path, ``state`` and ``snapshot()`` end them when their time has
passed. A forced-open breaker that expires lets the next call be a half-open trial, so a
forgotten drill heals itself only if the dependency is healthy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN

from khronos_cli.config import BreakerSettings
from khronos_cli.resilience.breaker_storage import BreakerStorage, MemoryBreakerStorage, SharedState
from khronos_cli.resilience.window import RollingWindow

__all__ = [
    "CLOSED",
    "DEFAULT_FORCE_EXPIRY",
    "EVENTS",
    "HALF_OPEN",
    "OPEN",
    "BreakerEvent",
    "BreakerStateMachine",
    "Listener",
]

Task = asyncio.Task[Any]
CLOSED, OPEN, HALF_OPEN = STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN
EVENTS = frozenset(
    {"fire", "success", "failure", "timeout", "reject", "fallback", "open", "half_open", "close",
     "forced", "health_check_failed", "storage_error", "storage_ok"}
)  # fmt: skip
DEFAULT_FORCE_EXPIRY = 900.0  # a forgotten drill heals itself after 15 minutes
# A health check is a cheap probe (getMe, a GET of the API's root, SELECT 1): it gets at most
# this long even when the calls it stands for may take far longer (an LLM answer: 30 s), so a
# hang is seen within an interval and this, not within a long answer's timeout.
HEALTH_CHECK_TIMEOUT = 5.0

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


@dataclasses.dataclass(slots=True)
class Forced:
    """An operator override: ``state`` until ``expires_at`` (on the breaker's clock)."""

    state: str
    reason: str
    expires_at: float


def _ceil_ms(seconds: float) -> float:
    """Rounded up to the millisecond, so that 0 means "due now", never "due in 0.4 ms"."""
    return max(0.0, math.ceil(seconds * 1000.0) / 1000.0)


class BreakerStateMachine:
    """State, transitions, stats, events and controls of one breaker (no call path)."""

    __slots__ = (
        "_clock", "_consecutive", "_expired", "_fails", "_fallbacks", "_fires", "_forced",
        "_generation", "_health_check", "_health_task", "_hold_until", "_inflight", "_lease",
        "_listeners", "_loop", "_max_wait", "_next_trial_at", "_opened_at",
        "_probe_blocked_until", "_reason", "_rejects", "_seen_version", "_shared", "_state",
        "_streak", "_successes", "_tasks", "_timeouts", "_trial_ok", "_trials", "_watchdog",
        "name", "settings", "storage", "window",
    )  # fmt: skip

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        storage: BreakerStorage | None = None,
        clock: Callable[[], float] = time.monotonic,
        health_check: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.storage = storage if storage is not None else MemoryBreakerStorage()
        self.window = RollingWindow(settings.rolling_window, settings.buckets)
        self._clock = clock
        self._health_check = health_check
        wait = settings.half_open_max_wait
        self._max_wait = wait if wait is not None else settings.timeout + 1.0
        self._consecutive = settings.policy == "consecutive"
        self._shared = self.storage.shared
        self._state = CLOSED
        self._reason = ""
        self._opened_at: float | None = None
        self._next_trial_at = self._hold_until = self._probe_blocked_until = 0.0
        self._forced: Forced | None = None
        self._lease = False
        self._generation = self._seen_version = self._streak = self._trial_ok = 0
        self._fires = self._successes = self._fails = self._timeouts = 0
        self._rejects = self._fallbacks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[Task, float] = {}  # task -> start (monotonic), in deadline order
        self._expired: dict[Task, tuple[int, float]] = {}  # timed out, not yet settled
        self._trials: dict[Task, float] = {}  # half-open permits in use
        self._watchdog: asyncio.TimerHandle | None = None
        self._listeners: list[tuple[Listener, frozenset[str] | None]] = []
        self._tasks: set[Task] = set()
        self._health_task: Task | None = None
        self.storage.attach(self.name, self._apply_shared, self._storage_error)

    def _trial_overdue(self, generation: int) -> None:
        if generation == self._generation and self._state is HALF_OPEN and self._trials:
            self._trip(self._clock(), "half-open trial exceeded the maximum wait")

    # -- transitions: local first, then the storage in the background ---------------------------

    def _trip(self, now: float, reason: str, *, publish: bool = True) -> None:
        if self._state is not OPEN:
            self._opened_at = now
        self._state = OPEN
        self._reason = reason
        self._next_trial_at = max(now + self.settings.reset_timeout, self._hold_until)
        self._new_generation()
        self._emit("open", reason=reason)
        if publish:
            self._push(self.storage.trip(self.name, self.settings.reset_timeout, reason))

    def _to_half_open(self) -> None:
        self._state = HALF_OPEN
        self._new_generation()
        self._emit("half_open")

    def _close(self, now: float, *, publish: bool = True) -> None:
        self._state = CLOSED
        self._reason = ""
        self._opened_at = None
        self._hold_until = 0.0
        self._streak = 0
        self.window.reset_counts()
        self._new_generation()
        self._emit("close")
        if publish:
            self._push(self.storage.close(self.name))

    def _new_generation(self) -> None:
        self._generation += 1
        self._trials.clear()
        self._trial_ok = 0
        self._lease = False
        self._probe_blocked_until = 0.0

    def _refresh(self, now: float) -> None:
        """End an expired operator override (lazily: reads and the slow path call this)."""
        forced = self._forced
        if forced is not None and forced.expires_at <= now:
            self._forced = None
            if forced.state == OPEN:
                self._next_trial_at = now  # the next call is a half-open trial
            self._emit("forced", forced=None, expired=forced.state, reason=forced.reason)

    def _push(self, operation: Awaitable[SharedState | None]) -> None:
        if self._shared:
            self._spawn(self._store(operation))
        else:
            cast(Any, operation).close()

    async def _store(self, operation: Awaitable[SharedState | None]) -> None:
        shared = await operation
        if shared is not None:
            self._apply_shared(shared, reply=True)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(cast(Any, coro))
        except RuntimeError:  # no loop (a sync caller): nothing to tell anyone
            cast(Any, coro).close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply_shared(self, shared: SharedState, *, reply: bool = False) -> None:
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
        now = self._clock()
        self._forced = None
        if shared.forced is not None:
            expires_at = now + (shared.forced_expires_in or 0.0)
            self._forced = Forced(shared.forced, shared.forced_reason, expires_at)
        if shared.state == OPEN:
            if self._state is not OPEN:
                self._trip(now, shared.reason, publish=False)
            if shared.opened_at is not None:
                self._opened_at = now - max(0.0, time.time() - shared.opened_at)
            self._next_trial_at = now + (shared.retry_in or 0.0)
            self._reason = shared.reason
        elif shared.state == HALF_OPEN:
            if self._state is not HALF_OPEN:
                self._to_half_open()
            if not self._lease:
                self._probe_blocked_until = now + (shared.retry_in or 0.0)
        elif self._state is not CLOSED:
            self._close(now, publish=False)

    def _storage_error(self, error: BaseException | None) -> None:
        self._emit("storage_error" if error is not None else "storage_ok", error=error)

    # -- events ---------------------------------------------------------------------------------

    def add_listener(self, listener: Listener, *kinds: str) -> None:
        """Call ``listener(event)`` for ``kinds`` (every kind when none is given). A listener
        that raises is logged and never breaks the call; an async one runs as a task."""
        unknown = set(kinds) - EVENTS
        if unknown:
            raise ValueError(f"unknown breaker events {sorted(unknown)}; known: {sorted(EVENTS)}")
        self._listeners.append((listener, frozenset(kinds) if kinds else None))

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = [entry for entry in self._listeners if entry[0] is not listener]

    def _emit(
        self, kind: str, *, error: BaseException | None = None, latency: float | None = None,
        **detail: object,
    ) -> None:  # fmt: skip
        if not self._listeners:
            return
        event = BreakerEvent(kind, self.name, self._state, error, latency, detail)
        for listener, kinds in self._listeners:
            if kinds is not None and kind not in kinds:
                continue
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception:
                log.exception("breaker %r: listener %r failed on %r", self.name, listener, kind)

    # -- operator control -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (pybreaker's constants)."""
        self._refresh(self._clock())
        return self._state

    async def force_open(self, reason: str, expires_in: float = DEFAULT_FORCE_EXPIRY) -> None:
        """Reject every call until ``expires_in`` seconds pass (then one trial) or a reset."""
        now = self._clock()
        self._forced = Forced(OPEN, reason, now + expires_in)
        if self._state is not OPEN:
            self._trip(now, "forced open", publish=False)
        self._next_trial_at = now + expires_in
        self._emit("forced", forced=OPEN, reason=reason, expires_in=expires_in)
        await self._store(self.storage.force(self.name, OPEN, reason, expires_in))

    async def force_closed(self, reason: str, expires_in: float = DEFAULT_FORCE_EXPIRY) -> None:
        """Let every call through and never trip until ``expires_in`` seconds pass or a reset."""
        now = self._clock()
        self._forced = Forced(CLOSED, reason, now + expires_in)
        if self._state is not CLOSED:
            self._close(now, publish=False)
        self._emit("forced", forced=CLOSED, reason=reason, expires_in=expires_in)
        await self._store(self.storage.force(self.name, CLOSED, reason, expires_in))

    async def reset(self) -> None:
        """End any override or hold and close with empty window counts (lifetime stats stay)."""
        now = self._clock()
        if self._forced is not None:
            self._forced = None
            self._emit("forced", forced=None, reason="reset")
        if self._state is not CLOSED:
            self._close(now, publish=False)
        self._hold_until = 0.0
        self.window.reset_counts()
        await self._store(self.storage.reset(self.name))

    def hold_open(self, seconds: float, reason: str = "upstream retry-after") -> None:
        """Open (or stay open) for at least ``seconds``, e.g. an upstream 429's retry-after.
        A forced-closed breaker stays closed: the operator's word wins."""
        now = self._clock()
        self._refresh(now)
        if self._forced is not None and self._forced.state == CLOSED:
            return
        self._hold_until = max(self._hold_until, now + seconds)
        if self._state is not OPEN:
            # Tripped by the hold alone: the upstream said when to come back, so the trial is
            # then, not a whole reset_timeout later (a 2 s flood wait must not cost 30 s).
            self._trip(now, reason, publish=False)
            self._next_trial_at = self._hold_until
        else:
            self._next_trial_at = max(self._next_trial_at, self._hold_until)
        self._reason = reason
        self._push(self.storage.hold(self.name, seconds, reason))

    # -- health check and lifecycle ---------------------------------------------------------------

    async def startup(self) -> None:
        """Load the shared state and start the periodic health check, when there is one."""
        self._loop = asyncio.get_running_loop()
        await self.storage.startup()
        await self._store(self.storage.load(self.name))
        if self._health_check is not None and self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(), name=f"health:{self.name}")

    async def aclose(self) -> None:
        """Stop the health check and let background storage updates finish."""
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def _health_loop(self) -> None:
        while True:
            # The check's period (the seed's 5 s), not a wait for a condition.
            await asyncio.sleep(self.settings.health_check_interval)
            await self.check_health()

    async def check_health(self) -> bool:
        """Run the health check once. A failure (an exception or ``False``) opens the breaker;
        a pass while open (not forced, not held) makes the next call a half-open trial."""
        if self._health_check is None:
            return True
        error: Exception | None = None
        try:
            async with asyncio.timeout(min(self.settings.timeout, HEALTH_CHECK_TIMEOUT)):
                healthy = await self._health_check() is not False
        except Exception as exc:
            healthy, error = False, exc
        now = self._clock()
        self._refresh(now)
        if not healthy:
            self._emit("health_check_failed", error=error)
            if self._state is not OPEN and self._forced is None:
                why = "no answer in time" if isinstance(error, TimeoutError) else str(error or "")
                self._trip(now, "health check failed" + (f": {why}" if why else ""))
        elif self._state is OPEN and self._forced is None and now >= self._hold_until:
            self._next_trial_at = now
            self._to_half_open()
        return healthy

    # -- stats ------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state, stats and settings. The ``state`` and ``stats`` keys are a contract
        (``khronos breakers --json``, ``GET /breakers/status``)."""
        now = self._clock()
        self._refresh(now)
        calls, failures = self.window.counts(now)
        mean, p50, p90, p99 = self.window.latency_ms(now)
        forced, wall = self._forced, time.time() - now
        next_trial_in = None
        if self._state is OPEN:
            next_at = forced.expires_at if forced is not None else self._next_trial_at
            next_trial_in = _ceil_ms(next_at - now)
        elif self._state is HALF_OPEN:
            next_trial_in = _ceil_ms(self._probe_blocked_until - now)
        settings = dataclasses.asdict(self.settings)
        settings.update(half_open_max_wait=self._max_wait, storage=self.storage.kind)
        del settings["name"]
        return {
            "name": self.name,
            "state": self._state,
            "reason": self._reason or None,
            "stats": {
                "fires": self._fires,
                "successes": self._successes,
                "failures": self._fails,
                "timeouts": self._timeouts,
                "rejects": self._rejects,
                "fallbacks": self._fallbacks,
                "error_percentage": round(failures * 100.0 / calls, 2) if calls else 0.0,
                "window_calls": calls,
                "window_failures": failures,
                "in_flight": len(self._inflight) + len(self._expired),
                "latency_ms": {
                    "mean": None if mean is None else round(mean, 3),
                    "p50": p50,
                    "p90": p90,
                    "p99": p99,
                },
            },
            "opened_at": None if self._opened_at is None else round(wall + self._opened_at, 3),
            "next_trial_in": next_trial_in,
            "forced": None
            if forced is None
            else {
                "state": forced.state,
                "reason": forced.reason,
                "expires_at": round(wall + forced.expires_at, 3),
                "expires_in": round(max(0.0, forced.expires_at - now), 3),
            },
            "settings": settings,
        }
