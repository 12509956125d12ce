"""An asyncio-native circuit breaker on pybreaker's state vocabulary and storage contract.

pybreaker records a *success* for creating an unawaited coroutine and counts ``CancelledError``
as a failure (REFERENCE.md §1). This breaker owns the async part:

* ``async with breaker:``, ``await breaker.call(fn, *args)`` and ``@breaker`` await the work. There
  is no lock: all bookkeeping is synchronous code between awaits on one event loop.
* The per-call timeout needs no timer per call: in-flight calls sit in an insertion-ordered dict
  ``{task: start}``, and since every call of one breaker has the same timeout, insertion order is
  deadline order. One ``call_later`` handle (the watchdog) is armed for the earliest deadline and
  cancels overdue tasks; the exit path turns that cancellation into :class:`CallTimeoutError` with
  ``task.uncancel()`` as ``asyncio.timeout`` does, so an outer, real cancellation is never
  swallowed. A timeout counts once as a timeout and once as a failure.
* Closed: outcomes go into a :class:`RollingWindow`, which trips on error % once
  ``volume_threshold`` calls ran in the window (or, with ``policy="consecutive"``, after
  ``fail_max`` failures in a row: pybreaker's rule). Rejected calls never enter the window, and
  closing resets its counts. Open: reject at once until ``reset_timeout`` (or an upstream
  retry-after, :meth:`hold_open`) has passed; then half-open admits ``half_open_max_calls`` trials
  and rejects the rest. A trial that outlives ``half_open_max_wait`` re-opens the breaker.
* ``CancelledError``, ``KeyboardInterrupt`` and ``SystemExit`` are neither success nor failure:
  they release a half-open permit and propagate unchanged. ``exclude`` errors count as success,
  ``ignore`` errors as nothing, and ``is_failure(result)`` can make a returned value a failure.
* Shared state (:mod:`khronos_cli.resilience.breaker_storage`): transitions happen locally first
  and are pushed to the storage in the background; only a half-open probe awaits the storage.
* The injected ``clock`` drives the window, reset and override expiry; latency and timeouts use
  real monotonic time, which is what the event loop schedules by.

Python 3.11's ``asyncio.current_task()`` is pure Python (~0.25 µs); the hot path reads asyncio's
own ``{loop: task}`` map for the loop it last ran on instead, falling back when that is not it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN

from khronos_cli.config import BreakerSettings
from khronos_cli.errors import BreakerError, CallTimeoutError, CircuitOpenError
from khronos_cli.resilience.breaker_storage import BreakerStorage, MemoryBreakerStorage, SharedState
from khronos_cli.resilience.window import RollingWindow

__all__ = ["EVENTS", "BreakerEvent", "CircuitBreaker", "UnhealthyResultError"]

P = ParamSpec("P")
T = TypeVar("T")
Task = asyncio.Task[Any]
CLOSED, OPEN, HALF_OPEN = STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN
EVENTS = frozenset(
    {"fire", "success", "failure", "timeout", "reject", "fallback", "open", "half_open", "close",
     "forced", "health_check_failed", "storage_error", "storage_ok"}
)  # fmt: skip
DEFAULT_FORCE_EXPIRY = 900.0  # a forgotten drill heals itself after 15 minutes

log = logging.getLogger("khronos.breaker")
_monotonic = time.monotonic
_TASKS: dict[asyncio.AbstractEventLoop | None, Task] = getattr(asyncio.tasks, "_current_tasks", {})
Classifier = tuple[type[BaseException], ...] | Callable[[BaseException], bool]
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


class UnhealthyResultError(BreakerError):
    """The call returned a value that ``is_failure`` counts as a failure (a 5xx or a 429).

    ``retry_after`` is read from a 429/503 response's ``Retry-After`` seconds, if any."""

    def __init__(self, breaker: str, result: object) -> None:
        self.result = result
        status = getattr(result, "status_code", None)
        self.retry_after: float | None = None
        if status in (429, 503):
            header = getattr(result, "headers", {}).get("retry-after", "")
            self.retry_after = float(header) if header.replace(".", "", 1).isdigit() else None
        super().__init__(
            breaker, f"call through {breaker!r} returned a failure: {status or result}"
        )


class _Rejected(CircuitOpenError):
    """A :class:`CircuitOpenError` built lazily: the eager one formats its message up front
    (~1 µs here), and a rejection must cost less than that in all."""

    def __init__(self, breaker: str, retry_in: float, state: str, why: str) -> None:
        self.breaker, self.retry_in, self._state, self._why = breaker, retry_in, state, why

    @property
    def reason(self) -> str:
        return f"{self._state} ({self._why})" if self._why else self._state

    @reason.setter
    def reason(self, value: str) -> None:
        self._state, self._why = value, ""

    def __str__(self) -> str:
        return f"circuit {self.breaker!r} is {self.reason}; next trial in {self.retry_in:.1f}s"

    def __repr__(self) -> str:
        return f"CircuitOpenError({self.breaker!r}, {self.retry_in!r}, {self.reason!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return CircuitOpenError, (self.breaker, self.retry_in, self.reason)


def _retry_after(error: BaseException) -> float | None:
    value = getattr(error, "retry_after", None)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _ceil_ms(seconds: float) -> float:
    """Rounded up to the millisecond, so that 0 means "due now", never "due in 0.4 ms"."""
    return max(0.0, math.ceil(seconds * 1000.0) / 1000.0)


def _classifier(spec: Classifier) -> Callable[[BaseException], bool] | None:
    if not isinstance(spec, tuple):
        return spec
    return (lambda exc: isinstance(exc, spec)) if spec else None


@dataclasses.dataclass(slots=True)
class _Forced:
    state: str
    reason: str
    expires_at: float


class CircuitBreaker:
    """One dependency's breaker, built from :class:`BreakerSettings` (see the module docstring)."""

    __slots__ = (
        "_clock", "_consecutive", "_exclude", "_expired", "_fails", "_fallback", "_fallbacks",
        "_fires", "_forced", "_generation", "_health_check", "_health_task", "_hold_until",
        "_ignore", "_inflight", "_is_failure", "_lease", "_listeners", "_loop", "_max_wait",
        "_nested", "_next_trial_at", "_opened_at", "_probe_blocked_until", "_real_clock",
        "_reason", "_rejects", "_retry_after", "_seen_version", "_shared", "_state", "_streak",
        "_successes", "_tasks", "_timeout", "_timeouts", "_trial_ok", "_trials", "_watchdog",
        "name", "settings", "storage", "window",
    )  # fmt: skip

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        storage: BreakerStorage | None = None,
        clock: Callable[[], float] = time.monotonic,
        fallback: Callable[..., Any] | None = None,
        exclude: Classifier = (),
        ignore: Classifier = (),
        is_failure: Callable[[Any], bool] | None = None,
        retry_after: Callable[[BaseException], float | None] = _retry_after,
        health_check: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.storage = storage if storage is not None else MemoryBreakerStorage()
        self.window = RollingWindow(settings.rolling_window, settings.buckets)
        self._clock = clock
        self._real_clock = clock is time.monotonic
        self._fallback = fallback
        self._exclude = _classifier(exclude)
        self._ignore = _classifier(ignore)
        self._is_failure = is_failure
        self._retry_after = retry_after
        self._health_check = health_check
        self._timeout = settings.timeout
        wait = settings.half_open_max_wait
        self._max_wait = wait if wait is not None else settings.timeout + 1.0
        self._consecutive = settings.policy == "consecutive"
        self._shared = self.storage.shared
        self._state = CLOSED
        self._reason = ""
        self._opened_at: float | None = None
        self._next_trial_at = self._hold_until = self._probe_blocked_until = 0.0
        self._forced: _Forced | None = None
        self._lease = False
        self._generation = self._seen_version = self._streak = self._trial_ok = 0
        self._fires = self._successes = self._fails = self._timeouts = 0
        self._rejects = self._fallbacks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[Task, float] = {}
        self._expired: dict[Task, tuple[int, float]] = {}
        self._nested: dict[Task, list[float]] = {}
        self._trials: dict[Task, float] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._listeners: list[tuple[Listener, frozenset[str] | None]] = []
        self._tasks: set[Task] = set()
        self._health_task: Task | None = None
        self.storage.attach(self.name, self._apply_shared, self._storage_error)

    # -- the call path ------------------------------------------------------------------------

    async def __aenter__(self) -> CircuitBreaker:
        task = _TASKS.get(self._loop) or self._bind_loop()
        if self._state is CLOSED:
            start = _monotonic()
            if self._inflight.setdefault(task, start) is start:
                self._fires += 1
                if self._listeners:
                    self._emit("fire")
                if self._watchdog is None:
                    self._arm()
                return self
        elif self._state is OPEN:  # the rejection fast path
            now = self._clock()
            forced = self._forced
            until = self._next_trial_at if forced is None else forced.expires_at
            if now < until:
                self._fires += 1
                self._rejects += 1
                if self._listeners:
                    self._emit("fire")
                    self._emit("reject")
                if forced is None:
                    raise _Rejected(self.name, until - now, OPEN, self._reason)
                raise _Rejected(self.name, until - now, "forced open", forced.reason)
        if self._admit(task):
            await self._probe(task)
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        task = _TASKS.get(self._loop) or self._bind_loop()
        if exc is None:
            self._succeeded(task)
            return
        error = self._exit(task, exc)
        if error is not None:
            raise error from exc

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` through the breaker, with fallback and result check."""
        task = _TASKS.get(self._loop) or self._bind_loop()
        start = _monotonic()
        if self._state is CLOSED and self._inflight.setdefault(task, start) is start:
            self._fires += 1
            if self._listeners:
                self._emit("fire")
            if self._watchdog is None:
                self._arm()
        else:
            try:
                if self._admit(task):
                    await self._probe(task)
            except CircuitOpenError as exc:
                if self._fallback is None:
                    raise
                return cast(T, await self._fall_back(args, kwargs, exc))
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            error = self._exit(task, exc)
            if self._fallback is not None and self._is_failure_error(error or exc):
                return cast(T, await self._fall_back(args, kwargs, error or exc))
            if error is not None:
                raise error from exc
            raise
        try:
            failed = self._is_failure is not None and self._is_failure(result)
        except BaseException:  # a broken predicate says nothing about the dependency
            self._neutral(task)
            self._inflight.pop(task, None)
            raise
        if failed:
            unhealthy = UnhealthyResultError(self.name, result)
            self._exit(task, unhealthy)
            if self._fallback is not None:
                return cast(T, await self._fall_back(args, kwargs, unhealthy))
            return result
        self._succeeded(task)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate a coroutine function so that every call goes through :meth:`call`."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@breaker needs an async function, got {fn!r}")

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper

    def _bind_loop(self) -> Task:
        self._loop = asyncio.get_running_loop()
        self._watchdog = None  # a handle from another loop would never fire here
        return cast(Task, asyncio.current_task())

    def _admit(self, task: Task) -> bool:
        """Every state but a plain closed one. Raises when rejected; True when the storage must
        be asked for the probe lease before the call may run."""
        self._fires += 1
        if self._listeners:
            self._emit("fire")
        now = self._clock()
        self._refresh(now)
        if self._state is OPEN:
            if self._forced is not None or now < self._next_trial_at:
                self._reject(now)
            self._to_half_open()
        probe = False
        if self._state is HALF_OPEN:
            if len(self._trials) >= self.settings.half_open_max_calls or (
                now < self._probe_blocked_until
            ):
                self._reject(now)
            self._trials[task] = now  # the permit is taken before any await
            if len(self._trials) == 1:
                assert self._loop is not None
                self._loop.call_later(self._max_wait, self._trial_overdue, self._generation)
            probe = self._shared and not self._lease
        if task in self._inflight:  # nested use in one task: the outer deadline covers it
            self._nested.setdefault(task, []).append(_monotonic())
        else:
            self._inflight[task] = _monotonic()
            if self._watchdog is None:
                self._arm()
        return probe

    async def _probe(self, task: Task) -> None:
        """Half-open with shared state: only the replica holding the lease may run trials."""
        try:
            shared = await self.storage.probe(self.name, self._max_wait)
        except BaseException:
            self._forget(task)
            raise
        if shared is not None:  # None: the storage failed, so fail open on the local permit
            self._lease = shared.granted
            if shared.granted:
                self._probe_blocked_until = 0.0
            else:
                self._trials.pop(task, None)
                self._apply_shared(shared, reply=True)
        if self._state is not CLOSED and task not in self._trials:
            self._forget(task)
            self._reject(self._clock())

    def _forget(self, task: Task) -> None:
        self._trials.pop(task, None)
        self._inflight.pop(task, None)

    def _reject(self, now: float) -> None:
        self._rejects += 1
        if self._listeners:
            self._emit("reject")
        forced = self._forced
        if forced is not None:
            raise _Rejected(self.name, forced.expires_at - now, "forced open", forced.reason)
        retry_in = max(0.0, self._next_trial_at - now, self._probe_blocked_until - now)
        raise _Rejected(self.name, retry_in, self._state, self._reason)

    def _succeeded(self, task: Task) -> None:
        if not self._nested and not self._trials:
            start = self._inflight.pop(task, None)
            if start is not None:
                end = _monotonic()
                self._successes += 1
                self._streak = 0
                self.window.success(end if self._real_clock else self._clock(), end - start)
                if self._listeners:
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
        now = end if self._real_clock else self._clock()
        if exc is None:
            self._outcome(task, True, now, end - start, None)
        elif not isinstance(exc, Exception) or (self._ignore is not None and self._ignore(exc)):
            self._neutral(task)
        elif self._exclude is not None and self._exclude(exc):
            self._outcome(task, True, now, end - start, None)
        else:
            self._outcome(task, False, now, end - start, exc)
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
            self._emit("timeout", error=error, latency=latency)
            self._outcome(task, False, self._clock(), latency, error)
            return error
        self._inflight[task] = start  # an outer cancel, or a body that swallowed ours
        return self._exit(task, exc)

    def _neutral(self, task: Task) -> None:
        if self._trials.pop(task, None) is not None and not self._trials and self._lease:
            self._lease = False
            self._push(self.storage.release(self.name))

    def _outcome(
        self, task: Task, ok: bool, now: float, latency: float, exc: BaseException | None
    ) -> None:
        trial = bool(self._trials) and self._trials.pop(task, None) is not None
        if ok:
            self._successes += 1
            self._streak = 0
            self.window.success(now, latency)
            self._emit("success", latency=latency)
            if trial:
                self._trial_ok += 1
                if self._trial_ok >= self.settings.half_open_max_calls:
                    self._close(now)
            return
        self._fails += 1
        self._streak += 1
        self.window.failure(now, latency)
        self._emit("failure", error=exc, latency=latency)
        if trial:
            self._trip(now, "half-open trial failed")
        elif self._state is CLOSED and self._should_trip(now):
            self._trip(now, "error threshold reached")
        seconds = self._retry_after(exc) if exc is not None else None
        if seconds is not None:
            self.hold_open(seconds, "upstream retry-after")

    def _should_trip(self, now: float) -> bool:
        self._refresh(now)
        if self._forced is not None:
            return False
        if self._consecutive:
            return self._streak >= self.settings.fail_max
        calls, failures = self.window.counts(now)
        settings = self.settings
        return calls >= settings.volume_threshold and (
            failures * 100.0 >= settings.error_threshold * calls
        )

    def _is_failure_error(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception) or (self._ignore is not None and self._ignore(exc)):
            return False
        return not (self._exclude is not None and self._exclude(exc))

    async def _fall_back(self, args: Any, kwargs: dict[str, Any], error: BaseException) -> Any:
        assert self._fallback is not None
        self._fallbacks += 1
        self._emit("fallback", error=error)
        result = self._fallback(*args, error=error, **kwargs)
        return await result if inspect.isawaitable(result) else result

    # -- the watchdog and the half-open guard ---------------------------------------------------

    def _arm(self) -> None:
        assert self._loop is not None
        first = next(iter(self._inflight.values()))
        delay = max(0.0, first + self._timeout - _monotonic())
        self._watchdog = self._loop.call_later(delay, self._on_watchdog)

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
        """Adopt the storage's word: a script's answer to us (``reply``) always; news from the
        channel or the poll only when newer than what we applied (a poll repeating old news
        must not undo a local step such as open -> half-open)."""
        if not reply and shared.version <= self._seen_version:
            return
        self._seen_version = max(self._seen_version, shared.version)
        now = self._clock()
        self._forced = None
        if shared.forced is not None:
            expires_at = now + (shared.forced_expires_in or 0.0)
            self._forced = _Forced(shared.forced, shared.forced_reason, expires_at)
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
        self._forced = _Forced(OPEN, reason, now + expires_in)
        if self._state is not OPEN:
            self._trip(now, "forced open", publish=False)
        self._next_trial_at = now + expires_in
        self._emit("forced", forced=OPEN, reason=reason, expires_in=expires_in)
        await self._store(self.storage.force(self.name, OPEN, reason, expires_in))

    async def force_closed(self, reason: str, expires_in: float = DEFAULT_FORCE_EXPIRY) -> None:
        """Let every call through and never trip until ``expires_in`` seconds pass or a reset."""
        now = self._clock()
        self._forced = _Forced(CLOSED, reason, now + expires_in)
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
            self._trip(now, reason, publish=False)
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
            async with asyncio.timeout(self._timeout):
                healthy = await self._health_check() is not False
        except Exception as exc:
            healthy, error = False, exc
        now = self._clock()
        self._refresh(now)
        if not healthy:
            self._emit("health_check_failed", error=error)
            if self._state is not OPEN and self._forced is None:
                self._trip(now, "health check failed")
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
