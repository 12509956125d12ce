"""The rate-limiting scheduler: Bottleneck's model, pyrate-limiter's decisions, no head-of-line.

``await limiter.schedule(fn, *args, key=..., priority=..., weight=..., expiration=...)`` runs
``fn`` once its key and the limiter allow it. Rate decisions are pyrate-limiter's atomic
check-and-consume (see ``backends``); the waiting, queueing and concurrency are here:

- **Per-key groups** (``group_by``): each key has its own priority heap (priority 0 is the most
  important, 5 the default; FIFO within a priority), weighted concurrency, spacing and rates; the
  ``global_*`` settings bind all keys together. A key that must wait sits in a timer heap and
  never blocks another: the dispatcher only ever looks at keys whose head job is ready, ordered
  by (priority, arrival). Without ``group_by`` the plain settings bind the whole limiter.
- **Groups are created on demand and evicted when idle** (nothing queued or running for
  ``idle_timeout``, and never before the key's rate state has drained, so eviction can never
  reset a rate early). Idle keys sit in an insertion-ordered dict, so eviction is O(1) each.
- **A bounded queue per key** (``max_queued``) with a strategy: ``reject`` the newcomer,
  ``drop-oldest``, or ``drop-lowest`` (the least important, oldest first, and only when it is
  less important than the newcomer). A dropped job fails with ``JobDroppedError`` whose
  ``retry_after`` is estimated from the queue ahead and the limits, not a constant.
- **Expiration** is ``asyncio.timeout`` around the job: the coroutine is really cancelled and
  the caller gets ``JobExpiredError``. ``retries`` re-queue a failed job (events ``retry``).
- **One 429 halt** per scope (``halt(seconds, scope=None|key)``): the longest wins and nothing
  but the clock ends it; with Redis it is a shared key that the decision script reads.
- ``stop(drop_waiting=...)`` refuses new jobs, drains or hands back the queue, and waits for
  the jobs in flight.

The queues and the dispatcher are the limiter's :class:`~.scheduler.Scheduler`, its keys a
:class:`~.keys.KeyTable`. A job runs in its caller's task: the dispatcher only resolves the
job's "go" future, so a cancelled caller cancels its job, and an uncontended job (nothing
queued) starts inline with no task switch at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from khronos_cli.config import LimiterSettings
from khronos_cli.errors import JobDroppedError, JobExpiredError, LimiterStoppedError
from khronos_cli.resilience.limiter.backends import ADMIT, MemoryRates, RedisRates
from khronos_cli.resilience.limiter.jobs import PRIORITY_DEFAULT, Job, KeyGroup, QueuedJob, spacing
from khronos_cli.resilience.limiter.keys import KeyTable
from khronos_cli.resilience.limiter.scheduler import Scheduler
from khronos_cli.resilience.limiter.stats import LimiterEvent, LimiterStats, Listener
from khronos_cli.resilience.redis_client import Client

__all__ = ["Limiter"]

T = TypeVar("T")


class Limiter:
    """A Bottleneck-style scheduler for one dependency, e.g. ``telegram`` grouped by chat.

    ``redis``: share the rate budgets and halts with every process on that Redis (keys under
    ``khronos:{bot}:limiter:<name>``); ``guard``: seconds added to every rate period (slack
    for transit jitter), ``key_guard`` to the per-key ones (default: ``guard``); ``clock``:
    seconds, monotonic in memory, wall-clock with Redis.
    """

    def __init__(
        self,
        settings: LimiterSettings,
        *,
        redis: Client | None = None,
        bot: str = "bot",
        namespace: str | None = None,
        guard: float = 0.0,
        key_guard: float | None = None,
        clock: Callable[[], float] | None = None,
        owns_redis: bool = False,
    ) -> None:
        s = settings
        if s.group_by is not None:
            key_limits = (s.max_concurrent, s.min_time, s.rates, s.group_rates)
            g_max, g_min, g_rates = s.global_max_concurrent, s.global_min_time, s.global_rates
        else:  # the plain fields bind the limiter as a whole
            key_limits = (None, 0.0, (), ())
            caps = [c for c in (s.max_concurrent, s.global_max_concurrent) if c is not None]
            g_max, g_min = min(caps, default=None), max(s.min_time, s.global_min_time)
            g_rates = (*s.rates, *s.global_rates)
        backend: MemoryRates | RedisRates
        if redis is not None:
            backend = RedisRates(
                redis,
                s.name,
                g_rates,
                bot=bot,
                namespace=namespace,
                guard=guard,
                key_guard=key_guard,
                min_time=g_min,
                server_time=clock is None,
                owns_client=owns_redis,
            )
        else:
            backend = MemoryRates(g_rates, guard=guard, key_guard=key_guard)
        self.name = s.name
        self.backend = backend
        self._clock = clock or (time.time if redis is not None else time.monotonic)
        key_max, key_min, key_rates, group_rates = key_limits
        self._keys = KeyTable(
            backend.key_state, self._clock, key_rates, group_rates, key_min, s.idle_timeout
        )
        self._scheduler = Scheduler(
            s.name, backend, self._clock, self._keys, key_max=key_max, global_limits=(g_max, g_min)
        )
        self.stats: LimiterStats = self._scheduler.stats
        self.settings = s
        self._grouped = s.group_by is not None
        self._g_interval = max(g_min, spacing(g_rates))
        self._max_queued, self._strategy = s.max_queued, s.strategy
        rated = bool(g_rates) or any(key_limits[2]) or any(key_limits[3])
        caps = [c for c in (key_limits[0], g_max) if c is not None]
        self._max_weight = 1 if rated else min(caps, default=1 << 30)  # GCRA burst 1: weight 1
        self._avg_exec = 0.0
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

    # -- public API ---------------------------------------------------------------------------

    async def schedule(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        key: Hashable = None,
        priority: int = PRIORITY_DEFAULT,
        weight: int = 1,
        expiration: float | None = None,
        retries: int = 0,
        retry_delay: float | Callable[[int], float] = 0.0,
        **kwargs: Any,
    ) -> T:
        """Run ``await fn(*args, **kwargs)`` when the limiter allows it and return its result.

        Raises ``JobDroppedError`` (queue full), ``JobExpiredError`` (ran past ``expiration``
        seconds and was cancelled), ``LimiterStoppedError``, or what ``fn`` raised once
        ``retries`` are spent. ``key`` is ignored by a limiter without ``group_by``.
        """
        self._check(priority, weight)
        attempt = 0
        while True:
            job = await self._admit(fn, args, kwargs, key, priority, weight)
            try:
                return await self._execute(job, expiration)  # type: ignore[no-any-return]
            except Exception as exc:
                if attempt >= retries:
                    self.stats.failed += 1
                    self._scheduler.emit("failed", job, error=exc)
                    raise
                attempt += 1
                delay = retry_delay(attempt) if callable(retry_delay) else retry_delay
                self.stats.retried += 1
                self._scheduler.emit("retry", job, error=exc, seconds=delay)
                if delay > 0:
                    await asyncio.sleep(delay)

    def room(self, key: Hashable = None, *, waiting: int = 0) -> float | None:
        """None when a job for ``key`` would be queued now; else the seconds to wait (a full
        queue's Retry-After). For edges that must answer 429 before taking work durably.
        ``waiting`` counts jobs for ``key`` that the caller holds back in order before they
        reach this limiter (the outbox sends a chat's messages one at a time)."""
        if self._stopping:
            raise LimiterStoppedError(self.name)
        key = key if self._grouped else None
        group = self._keys.get(key)
        queued = (0 if group is None else len(group.heap)) + waiting
        if self._max_queued is None or queued < self._max_queued:
            return None
        if self._strategy != "reject":
            return None  # the newcomer is kept; an older or lower job makes room
        now = self._clock()
        if group is None:
            group = self._keys.group(key, now)
            self._keys.mark_idle(group, now)
        extra = max(self._keys.key_min, group.interval) * waiting
        return round(self._retry_after(group, now) + extra, 3)

    def halted(self, key: Hashable = None) -> bool:
        """Whether starts are halted right now: every key's, or ``key``'s (a 429's retry_after)."""
        now = self._clock()
        if self._scheduler.halted > now:
            return True
        group = self._keys.get(key) if self._grouped else None
        return group is not None and group.halted > now

    def halt(self, seconds: float, scope: Hashable = None) -> None:
        """Pause starts (all keys, or one key's) for ``seconds``, e.g. a 429's ``retry_after``.

        Overlapping halts: the longest wins; nothing but the clock ends one. With Redis the halt
        is shared by every process (a key with that expiry).
        """
        now = self._clock()
        until = now + max(0.0, seconds)
        key = scope if self._grouped else None
        if key is None:
            self._scheduler.halted = max(self._scheduler.halted, until)
        else:
            group = self._keys.group(key, now)
            group.halted = max(group.halted, until)
            self._keys.mark_idle(group, now)
        if self.stats.wants("halt"):
            self.stats.emit(LimiterEvent("halt", self.name, key, seconds=seconds))
        if isinstance(self.backend, RedisRates):
            write = self.backend.write_halt(int(until * 1000), int(seconds * 1000) + 1, key)
            task = asyncio.get_running_loop().create_task(write)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def on(self, event: str, listener: Listener) -> Callable[[], None]:
        """Subscribe to ``queued``, ``dropped``, ``executing``, ``done``, ``failed``,
        ``retry``, ``idle`` or ``halt``; returns the unsubscribe function."""
        return self.stats.on(event, listener)

    async def pump(self) -> None:
        """Evict idle keys and re-examine the queue now; return once the dispatcher has acted on
        all that is due (for an injected clock in tests, and for tools)."""
        await self._scheduler.pump()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state for the control socket and ``GET /limiter/stats``."""
        now, st, sc = self._clock(), self.stats, self._scheduler
        return {
            "name": self.name,
            "backend": self.backend.name,
            "received": st.received,
            "queued": sc.queued,
            "running": sc.running,
            "executing": sc.executing,
            "done": st.done,
            "dropped": st.dropped,
            "failed": st.failed,
            "retried": st.retried,
            "rate": st.rate(now),
            "history": st.history(now),
            "keys": len(self._keys),
            "halted_for": round(max(0.0, sc.halted - now), 3),
            "stopping": self._stopping,
        }

    async def stop(self, *, drop_waiting: bool = False) -> list[QueuedJob]:
        """Refuse new jobs; drain the queue (or hand it back), then wait for running jobs.

        With ``drop_waiting`` the queued jobs fail with ``LimiterStoppedError`` for their
        callers and are returned, most important first, for the caller to persist.
        """
        self._stopping = True
        scheduler = self._scheduler
        if drop_waiting:
            scheduler.hand_back_all()
        scheduler.kick()
        await scheduler.drained.wait()
        await scheduler.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        handed, scheduler.handed = scheduler.handed, []
        return handed

    async def aclose(self) -> None:
        """Stop at once (queued jobs fail) and release the backend."""
        await self.stop(drop_waiting=True)
        await self.backend.aclose()

    # -- admission ----------------------------------------------------------------------------

    def _check(self, priority: int, weight: int) -> None:
        if not 0 <= priority <= 9:
            raise ValueError(f"priority must be 0 (most important) to 9, not {priority!r}")
        if not 1 <= weight <= self._max_weight:
            raise ValueError(f"weight {weight!r} can never run in limiter {self.name!r}")
        if self._stopping:
            raise LimiterStoppedError(self.name)

    async def _admit(
        self, fn: Any, args: Any, kwargs: Any, key: Hashable, priority: int, weight: int
    ) -> Job:
        if self._stopping:
            raise LimiterStoppedError(self.name)
        scheduler = self._scheduler
        now = self._clock()
        group = self._keys.group(key if self._grouped else None, now)
        job = Job(fn, args, kwargs, group, priority, weight)
        self.stats.received += 1
        scheduler.drained.clear()
        self._keys.busy(group)
        if scheduler.free(group, job, now):
            scheduler.reserve(group, job)
            verdict = self.backend.acquire(group.handle, weight, int(now * 1000))
            if not isinstance(verdict, tuple):
                try:
                    verdict = await scheduler.awaited(verdict)
                except BaseException:
                    scheduler.unreserve(job)
                    self._keys.mark_idle(group, self._clock())
                    scheduler.maybe_drained()
                    raise
                now = self._clock()
            if verdict[0] == ADMIT:
                scheduler.started(job, now)
                return job
            scheduler.unreserve(job)
            scheduler.refused(group, verdict, now)
        return await self._queue(job, now)

    async def _queue(self, job: Job, now: float) -> Job:
        scheduler, group = self._scheduler, job.group
        if self._max_queued is not None and len(group.heap) >= self._max_queued:
            victim = self._victim(group, job)
            error = JobDroppedError(self.name, group.key, self._retry_after(group, now))
            if victim is job:
                self.stats.dropped += 1
                scheduler.emit("dropped", job, error=error)
                raise error
            scheduler.fail(victim, error, dropped=True)
        scheduler.enqueue(job, now)
        assert job.future is not None
        try:
            await job.future
        except asyncio.CancelledError:
            if job in group.heap:
                scheduler.remove(job)
            elif job.future.done() and not job.future.cancelled():
                scheduler.running -= 1  # started, then cancelled before executing
                scheduler.release(job)
            raise
        return job

    def _victim(self, group: KeyGroup, newcomer: Job) -> Job:
        if self._strategy == "drop-oldest":
            return min(group.heap, key=lambda job: job.seq)
        if self._strategy == "drop-lowest":
            worst = max(group.heap, key=lambda job: (job.priority, -job.seq))
            return worst if worst.priority > newcomer.priority else newcomer
        return newcomer

    def _retry_after(self, group: KeyGroup, now: float) -> float:
        """Seconds until the queue ahead of a newcomer to ``group`` has likely drained."""
        sc, key_min = self._scheduler, self._keys.key_min
        ahead = len(group.heap)
        head = max(
            0.0,
            group.not_before - now,
            group.last_start + key_min - now,
            group.halted - now,
            sc.halted - now,
            sc.not_before - now,
        )
        per_key = max(key_min, group.interval) * ahead
        per_global = self._g_interval * sc.queued
        slots = min(c for c in (sc.key_max, sc.g_max, ahead or 1) if c is not None)
        busy = self._avg_exec * ahead / max(1, slots)
        return round(head + max(per_key, per_global, busy, 0.001), 3)

    # -- execution ----------------------------------------------------------------------------

    async def _execute(self, job: Job, expiration: float | None) -> Any:
        scheduler = self._scheduler
        scheduler.running -= 1
        scheduler.executing += 1
        scheduler.emit("executing", job)
        started = self._clock()
        try:
            if expiration is None:
                result = await job.fn(*job.args, **job.kwargs)
            else:
                deadline = asyncio.timeout(expiration)
                try:
                    async with deadline:
                        result = await job.fn(*job.args, **job.kwargs)
                except TimeoutError as exc:
                    if deadline.expired():
                        raise JobExpiredError(self.name, expiration) from exc
                    raise
            self.stats.done += 1
            scheduler.emit("done", job)
            return result
        finally:
            scheduler.executing -= 1
            self._avg_exec += (self._clock() - started - self._avg_exec) * 0.2
            scheduler.release(job)
