"""An asyncio-native circuit breaker on pybreaker's state vocabulary and storage contract.

pybreaker records a *success* for creating an unawaited coroutine and counts ``CancelledError``
as a failure (REFERENCE.md §1). :class:`CircuitBreaker` is the call path, its timeout watchdog
and its counters; the state machine is a :class:`~.state.BreakerState` it owns, the periodic
probe a :class:`~.health.HealthCheck`.

* ``async with breaker:`` awaits the work. There is no lock: all bookkeeping is synchronous code
  between awaits on one event loop.
* The per-call timeout needs no timer per call: in-flight calls sit in an insertion-ordered dict
  ``{task: start}``, and since every call of one breaker has the same timeout, insertion order is
  deadline order. One ``call_later`` handle (the watchdog) is armed for the earliest deadline and
  cancels overdue tasks; the exit path turns that cancellation into :class:`CallTimeoutError` with
  ``task.uncancel()`` as ``asyncio.timeout`` does, so an outer, real cancellation is never
  swallowed. A timeout counts once as a timeout and once as a failure. (A per-call
  ``asyncio.timeout()`` costs a TimerHandle per call: see ``benchmarks/breaker.py``.)
* Closed: outcomes go into the rolling window, which trips on error % once ``volume_threshold``
  calls ran in it (or, with ``policy="consecutive"``, after ``fail_max`` failures in a row:
  pybreaker's rule). Rejected calls never enter the window. Open: reject at once until
  ``reset_timeout`` (or an upstream retry-after) has passed; then half-open admits
  ``half_open_max_calls`` trials and rejects the rest; a trial that outlives
  ``half_open_max_wait`` re-opens the breaker.
* ``CancelledError``, ``KeyboardInterrupt`` and ``SystemExit`` are neither success nor failure:
  they release a half-open permit and propagate unchanged; so do ``ignore`` errors (a 4xx: our
  own mistake says nothing about the dependency). An error with a ``retry_after`` holds the
  breaker open that long.
* Whoever serves the caller another way (the bot asking OpenAI, or answering the fallback text)
  calls :meth:`CircuitBreaker.record_fallback`: the ``fallbacks`` count (the ``fb`` column).
* The injected ``clock`` drives the window, reset and override expiry; latency and timeouts use
  real monotonic time, which is what the event loop schedules by.

Like every asyncio object, a breaker belongs to one event loop at a time (one thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from khronos_cli.config import BreakerSettings
from khronos_cli.errors import CallTimeoutError
from khronos_cli.resilience.breaker.events import Background, Listener, Listeners
from khronos_cli.resilience.breaker.health import HealthCheck
from khronos_cli.resilience.breaker.rejection import (
    Classifier,
    Rejected,
    classifier,
    retry_after_of,
)
from khronos_cli.resilience.breaker.state import (
    CLOSED,
    DEFAULT_FORCE_EXPIRY,
    HALF_OPEN,
    OPEN,
    BreakerState,
)
from khronos_cli.resilience.breaker.storage import BreakerStorage, MemoryBreakerStorage

__all__ = ["CircuitBreaker"]

Task = asyncio.Task[Any]

_monotonic = time.monotonic
# An exit asks for its task again. Keeping the task in a context variable instead made a
# reference cycle of every task that entered a breaker (task, its context, the variable's value:
# the task), which only the garbage collector could free: three cycles per update, a tenth of the
# bot's CPU in collections. ``asyncio.current_task()`` is Python on 3.11, around a dict of the
# running task by loop: read that dict directly there (two C calls, no frame); C from 3.12.
_running_loop = asyncio.get_running_loop
_task_of: Callable[[asyncio.AbstractEventLoop], Task | None]
if sys.version_info < (3, 12):
    _task_of = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
else:
    _task_of = asyncio.current_task


class CircuitBreaker:
    """One dependency's breaker, built from :class:`BreakerSettings` (see the module docstring)."""

    __slots__ = (
        "_background",
        "_expired",
        "_fails",
        "_fallbacks",
        "_fires",
        "_health",
        "_ignore",
        "_inflight",
        "_listeners",
        "_nested",
        "_real_clock",
        "_rejects",
        "_retry_after",
        "_successes",
        "_timeout",
        "_timeouts",
        "_watchdog",
        "machine",
        "name",
        "settings",
        "storage",
    )

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        storage: BreakerStorage | None = None,
        clock: Callable[[], float] = time.monotonic,
        ignore: Classifier = (),
        retry_after: Callable[[BaseException], float | None] = retry_after_of,
        health_check: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.storage = storage if storage is not None else MemoryBreakerStorage()
        self._background = Background()
        self._listeners = Listeners(self.name, self._background)
        self.machine = BreakerState(
            settings, self.storage, clock, self._listeners, self._background
        )
        self._health = None if health_check is None else HealthCheck(self.machine, health_check)
        self._real_clock = clock is time.monotonic
        self._timeout = settings.timeout
        self._ignore = classifier(ignore)
        self._retry_after = retry_after
        self._fires = self._successes = self._fails = self._timeouts = 0
        self._rejects = self._fallbacks = 0
        self._inflight: dict[Task, float] = {}  # task -> start (monotonic), in deadline order
        self._expired: dict[Task, tuple[int, float]] = {}  # timed out, not yet settled
        self._nested: dict[Task, list[float]] = {}
        self._watchdog: asyncio.TimerHandle | None = None

    # -- the call path ------------------------------------------------------------------------

    async def __aenter__(self) -> CircuitBreaker:
        machine = self.machine
        task: Task | None = None
        if machine.current is CLOSED:
            task = _task_of(_running_loop())
            start = _monotonic()
            if self._inflight.setdefault(task, start) is start:  # type: ignore[arg-type]
                self._fires += 1
                if self._listeners.per_call:
                    self._emit("fire")
                if self._watchdog is None:
                    self._arm()
                return self
        elif machine.current is OPEN:  # the rejection fast path
            now = machine.clock()
            forced = machine.forced
            until = machine.next_trial_at if forced is None else forced.expires_at
            if now < until:
                self._fires += 1
                self._rejects += 1
                if self._listeners.per_call:
                    self._emit("fire")
                    self._emit("reject")
                if forced is None:
                    raise Rejected(self.name, until - now, OPEN, machine.reason)
                raise Rejected(self.name, until - now, "forced open", forced.reason)
        if task is None:
            task = _task_of(_running_loop())
        assert task is not None
        if self._admit(task):
            await self._probe(task)
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        task = _task_of(_running_loop())
        assert task is not None  # a breaker is entered and left in one task
        if exc is None:
            self._succeeded(task)
            return
        error = self._exit(task, exc)
        if error is not None:
            raise error from exc

    def _emit(
        self, kind: str, error: BaseException | None = None, latency: float | None = None
    ) -> None:
        self._listeners.emit(kind, self.machine.current, error, latency)

    def _admit(self, task: Task) -> bool:
        """Every state but a plain closed one. Raises when rejected; True when the storage must
        be asked for the probe lease before the call may run."""
        self._fires += 1
        self._emit("fire")
        machine = self.machine
        now = machine.clock()
        machine.refresh(now)
        if machine.current is OPEN:
            if machine.forced is not None or now < machine.next_trial_at:
                self._reject(now)
            machine.to_half_open()
        if machine.current is HALF_OPEN:
            if len(machine.trials) >= self.settings.half_open_max_calls or (
                now < machine.probe_blocked_until
            ):
                self._reject(now)
            machine.trials[task] = now  # the permit is taken before any await
            if len(machine.trials) == 1:
                asyncio.get_running_loop().call_later(
                    machine.max_wait, machine.trial_overdue, machine.generation
                )
            if self.storage.shared and not machine.lease:
                return True  # the call's time starts once the lease is ours
        self._start(task)
        return False

    def _start(self, task: Task) -> None:
        if task in self._inflight:  # nested use in one task: the outer deadline covers it
            self._nested.setdefault(task, []).append(_monotonic())
        else:
            self._inflight[task] = _monotonic()
            if self._watchdog is None:
                self._arm()

    async def _probe(self, task: Task) -> None:
        """Half-open with shared state: only the replica holding the lease may run trials."""
        machine = self.machine
        try:
            shared = await self.storage.probe(self.name, machine.max_wait)
        except BaseException:
            machine.trials.pop(task, None)
            raise
        if shared is not None:  # None: the storage failed, so fail open on the local permit
            machine.lease = shared.granted
            if shared.granted:
                machine.probe_blocked_until = 0.0
            else:
                machine.trials.pop(task, None)
                machine.adopt(shared, reply=True)
        if machine.current is not CLOSED and task not in machine.trials:
            self._reject(machine.clock())
        self._start(task)

    def _reject(self, now: float) -> None:
        self._rejects += 1
        self._emit("reject")
        machine = self.machine
        forced = machine.forced
        if forced is not None:
            raise Rejected(self.name, forced.expires_at - now, "forced open", forced.reason)
        retry_in = max(0.0, machine.next_trial_at - now, machine.probe_blocked_until - now)
        raise Rejected(self.name, retry_in, machine.current, machine.reason)

    def _succeeded(self, task: Task) -> None:
        machine = self.machine
        if not self._nested and not machine.trials:
            start = self._inflight.pop(task, None)
            if start is not None:
                end = _monotonic()
                self._successes += 1
                machine.streak = 0
                machine.window.success(end if self._real_clock else machine.clock(), end - start)
                if self._listeners.per_call:
                    self._emit("success", latency=end - start)
                return
        self._exit(task, None)

    def _exit(self, task: Task, exc: BaseException | None) -> BaseException | None:
        """Settle one call; returns the error to raise instead of ``exc`` (a timeout), if any."""
        stack = self._nested.get(task) if self._nested else None
        if stack:
            start = stack.pop()
            if not stack:
                del self._nested[task]
        else:
            popped = self._inflight.pop(task, None)
            if popped is None:
                return self._exit_expired(task, exc)
            start = popped
        end = _monotonic()
        now = end if self._real_clock else self.machine.clock()
        if exc is None:
            self._settle(task, now, end - start, None)
        elif not isinstance(exc, Exception) or (self._ignore is not None and self._ignore(exc)):
            self.machine.release(task)
        else:
            self._settle(task, now, end - start, exc)
        return None

    def _exit_expired(self, task: Task, exc: BaseException | None) -> BaseException | None:
        entry = self._expired.pop(task, None)
        if entry is None:
            return None
        cancelling, start = entry
        if task.uncancel() <= cancelling and isinstance(exc, asyncio.CancelledError):
            self._timeouts += 1
            error = CallTimeoutError(self.name, self._timeout)
            latency = _monotonic() - start
            self._emit("timeout", error, latency)
            self._settle(task, self.machine.clock(), latency, error)
            return error
        self._inflight[task] = start  # an outer cancel, or a body that swallowed ours
        return self._exit(task, exc)

    def _settle(self, task: Task, now: float, latency: float, exc: BaseException | None) -> None:
        if exc is None:
            self._successes += 1
            self._emit("success", latency=latency)
            self.machine.settle(task, True, now, latency, None)
        else:
            self._fails += 1
            self._emit("failure", exc, latency)
            self.machine.settle(task, False, now, latency, self._retry_after(exc))

    def record_fallback(self, error: BaseException | None = None) -> None:
        """Someone served the caller another way after this breaker's call failed or was
        rejected (the bot asking OpenAI, or answering the fallback text): counted in
        ``fallbacks`` (the ``fb`` column) and emitted as ``fallback``."""
        self._fallbacks += 1
        self._emit("fallback", error)

    # -- the watchdog ---------------------------------------------------------------------------

    def _arm(self) -> None:
        first = next(iter(self._inflight.values()))
        delay = max(0.0, first + self._timeout - _monotonic())
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        limit = _monotonic() - self._timeout
        inflight = self._inflight
        while inflight:
            task, start = next(iter(inflight.items()))
            if start > limit:
                break
            del inflight[task]
            if not task.done():
                self._expired[task] = (task.cancelling(), start)
                task.cancel()
        if inflight:
            self._arm()

    # -- operator control, events and lifecycle -------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (pybreaker's constants)."""
        self.machine.refresh(self.machine.clock())
        return self.machine.current

    def add_listener(self, listener: Listener, *kinds: str) -> None:
        """Call ``listener(event)`` for ``kinds`` (every kind when none is given). A listener
        that raises is logged and never breaks the call; an async one runs as a task."""
        self._listeners.add(listener, *kinds)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    async def force_open(self, reason: str, expires_in: float = DEFAULT_FORCE_EXPIRY) -> None:
        """Reject every call until ``expires_in`` seconds pass (then one trial) or a reset."""
        await self.machine.force(OPEN, reason, expires_in)

    async def force_closed(self, reason: str, expires_in: float = DEFAULT_FORCE_EXPIRY) -> None:
        """Let every call through and never trip until ``expires_in`` seconds pass or a reset."""
        await self.machine.force(CLOSED, reason, expires_in)

    async def reset(self) -> None:
        """End any override or hold and close with empty window counts (lifetime stats stay)."""
        await self.machine.reset()

    def hold_open(self, seconds: float, reason: str = "upstream retry-after") -> None:
        """Open (or stay open) for at least ``seconds``, e.g. an upstream 429's retry-after.
        A forced-closed breaker stays closed: the operator's word wins."""
        self.machine.hold_open(seconds, reason)

    async def check_health(self) -> bool:
        """Run the health check once (True when there is none); see :class:`HealthCheck`."""
        return True if self._health is None else await self._health.check()

    async def startup(self) -> None:
        """Load the shared state and start the periodic health check, when there is one."""
        await self.storage.startup()
        await self.machine.store(self.storage.load(self.name))
        if self._health is not None:
            self._health.start()

    async def aclose(self) -> None:
        """Stop the health check and let background storage updates finish."""
        if self._health is not None:
            await self._health.stop()
        await self._background.wait()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state, stats and settings. The ``state`` and ``stats`` keys are a contract
        (``khronos breakers --json``, ``GET /breakers/status``)."""
        machine = self.machine
        now = machine.clock()
        machine.refresh(now)
        calls, failures = machine.window.counts(now)
        mean, p50, p90, p99 = machine.window.latency_ms(now)
        settings = dataclasses.asdict(self.settings)
        settings.update(half_open_max_wait=machine.max_wait, storage=self.storage.kind)
        del settings["name"]
        stats = {
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
        }
        return {"name": self.name, **machine.describe(now, stats), "settings": settings}
