"""An asyncio-native circuit breaker on pybreaker's state vocabulary and storage contract.

pybreaker records a *success* for creating an unawaited coroutine and counts ``CancelledError``
as a failure (REFERENCE.md §1). :class:`CircuitBreaker` owns the async part; its state machine,
stats and controls live in :mod:`khronos_cli.resilience.breaker_machine`.

* ``async with breaker:``, ``await breaker.call(fn, *args)`` and ``@breaker`` await the work. There
  is no lock: all bookkeeping is synchronous code between awaits on one event loop.
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
  they release a half-open permit and propagate unchanged. ``exclude`` errors count as success,
  ``ignore`` errors as nothing, and ``is_failure(result)`` can make a returned value a failure.
  An error (or failing result) with a ``retry_after`` holds the breaker open that long.
* The injected ``clock`` drives the window, reset and override expiry; latency and timeouts use
  real monotonic time, which is what the event loop schedules by.

Python 3.11's ``asyncio.current_task()`` is pure Python (~0.25 µs); the hot path reads asyncio's
own ``{loop: task}`` map for the loop it last ran on instead, falling back when that loop is not
running. Like every asyncio object, a breaker belongs to one event loop at a time (one thread).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from khronos_cli.config import BreakerSettings
from khronos_cli.errors import BreakerError, CallTimeoutError, CircuitOpenError
from khronos_cli.resilience.breaker_machine import (
    CLOSED,
    EVENTS,
    HALF_OPEN,
    OPEN,
    BreakerEvent,
    BreakerStateMachine,
)
from khronos_cli.resilience.breaker_storage import BreakerStorage

__all__ = ["EVENTS", "BreakerEvent", "CircuitBreaker", "UnhealthyResultError"]

P = ParamSpec("P")
T = TypeVar("T")
Task = asyncio.Task[Any]
Classifier = tuple[type[BaseException], ...] | Callable[[BaseException], bool]

_monotonic = time.monotonic
_TASKS: dict[asyncio.AbstractEventLoop | None, Task] = getattr(asyncio.tasks, "_current_tasks", {})


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
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _classifier(spec: Classifier) -> Callable[[BaseException], bool] | None:
    if isinstance(spec, type):
        spec = (spec,)  # one class given where a tuple was meant
    if isinstance(spec, tuple):
        classes = spec
        return (lambda exc: isinstance(exc, classes)) if classes else None
    return spec


class CircuitBreaker(BreakerStateMachine):
    """One dependency's breaker, built from :class:`BreakerSettings` (see the module docstring)."""

    __slots__ = (
        "_exclude", "_fallback", "_ignore", "_is_failure", "_nested", "_real_clock",
        "_retry_after", "_timeout",
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
        super().__init__(settings, storage=storage, clock=clock, health_check=health_check)
        self._real_clock = clock is time.monotonic
        self._timeout = settings.timeout
        self._fallback = fallback
        self._exclude = _classifier(exclude)
        self._ignore = _classifier(ignore)
        self._is_failure = is_failure
        self._retry_after = retry_after
        self._nested: dict[Task, list[float]] = {}

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
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._watchdog = None  # a handle of another loop would never fire here
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
        if self._state is HALF_OPEN:
            if len(self._trials) >= self.settings.half_open_max_calls or (
                now < self._probe_blocked_until
            ):
                self._reject(now)
            self._trials[task] = now  # the permit is taken before any await
            if len(self._trials) == 1:
                assert self._loop is not None
                self._loop.call_later(self._max_wait, self._trial_overdue, self._generation)
            if self._shared and not self._lease:
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
        try:
            shared = await self.storage.probe(self.name, self._max_wait)
        except BaseException:
            self._trials.pop(task, None)
            raise
        if shared is not None:  # None: the storage failed, so fail open on the local permit
            self._lease = shared.granted
            if shared.granted:
                self._probe_blocked_until = 0.0
            else:
                self._trials.pop(task, None)
                self._apply_shared(shared, reply=True)
        if self._state is not CLOSED and task not in self._trials:
            self._reject(self._clock())
        self._start(task)

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

    def record_fallback(self, error: BaseException | None = None) -> None:
        """Someone served the caller another way after this breaker's call failed or was
        rejected (the bot asking OpenAI, or answering the fallback text): counted in
        ``fallbacks`` (the ``fb`` column) and emitted as ``fallback``, as the breaker's own
        fallback path counts itself."""
        self._fallbacks += 1
        self._emit("fallback", error=error)

    async def _fall_back(self, args: Any, kwargs: dict[str, Any], error: BaseException) -> Any:
        assert self._fallback is not None
        self.record_fallback(error)
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
