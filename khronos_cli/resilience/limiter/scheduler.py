"""A limiter's scheduler: the ready and timer heaps, the global limits, and the dispatcher.

Every key (chat, user) is a :class:`KeyGroup` (see :mod:`.keys`) with its own heap of jobs
ordered by (priority, arrival), its weighted running count, last start, rate wait and halt. A
group whose head job may start as far as its *key* is concerned sits in the ``ready`` heap,
ordered by that job's (priority, arrival); a group that must wait sits in the ``timers`` heap
until then; a group waiting for one of its own jobs to finish sits nowhere and is re-examined
when one does. The dispatcher only ever pops ready groups, checks the *global* limits (halt,
spacing, weighted slots, global rate wait) and asks the backend for the atomic rate decision,
so a waiting key never delays another.

The counts (``queued``, ``running``, ``executing``, ``used`` weight) follow Bottleneck's job
states and are read by :class:`~.limiter.Limiter`, which owns admission and execution.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from khronos_cli.errors import LimiterStoppedError
from khronos_cli.resilience.limiter.backends import (
    ADMIT,
    GLOBAL,
    HALT_GLOBAL,
    HALT_KEY,
    KEY,
    MemoryRates,
    RedisRates,
    Verdict,
)
from khronos_cli.resilience.limiter.jobs import INF, Job, KeyGroup, QueuedJob
from khronos_cli.resilience.limiter.keys import KeyTable
from khronos_cli.resilience.limiter.stats import LimiterEvent, LimiterStats

__all__ = ["Scheduler"]

_log = logging.getLogger("khronos.limiter")


class Scheduler:
    """Readiness, the global limits and the dispatcher of one limiter."""

    def __init__(
        self,
        name: str,
        backend: MemoryRates | RedisRates,
        clock: Callable[[], float],
        keys: KeyTable,
        *,
        key_max: int | None,
        global_limits: tuple[int | None, float],
    ) -> None:
        self.name = name
        self.backend = backend
        self.clock = clock
        self.keys = keys
        self.key_max, self.key_min = key_max, keys.key_min
        self.g_max, self.g_min = global_limits
        self.stats = LimiterStats()
        self.queued = self.running = self.executing = self.used = 0
        self.last_start = self.not_before = self.halted = -INF
        self.deciding = self.dropping = self.closed = False
        self.decided = asyncio.Event()
        self.handed: list[QueuedJob] = []
        self.drained = asyncio.Event()
        self.drained.set()
        self.resting = asyncio.Event()
        self._ready: list[tuple[int, int, KeyGroup]] = []
        self._timers: list[tuple[float, int, KeyGroup]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF

    # -- slots and counts -------------------------------------------------------------------------

    def reserve(self, group: KeyGroup, job: Job) -> None:
        group.running += job.weight
        self.used += job.weight

    def unreserve(self, job: Job) -> None:
        job.group.running -= job.weight
        self.used -= job.weight

    def started(self, job: Job, now: float) -> None:
        group = job.group
        group.last_start = self.last_start = now
        self.running += 1
        self.stats.started(now)

    def release(self, job: Job) -> None:
        """``job`` finished: free its slot and look at what may start now."""
        group = job.group
        group.running -= job.weight
        self.used -= job.weight
        if group.heap:
            self.evaluate(group, self.clock())
        elif group.running == 0:
            self.keys.mark_idle(group, self.clock())
        if self.queued:
            self.kick()
        elif not (self.running or self.executing or self.used):
            if self.stats.wants("idle"):  # after this job's done/failed event
                asyncio.get_running_loop().call_soon(self.maybe_drained)
            else:
                self.drained.set()

    def maybe_drained(self) -> None:
        if self.queued == 0 and self.running == 0 and self.executing == 0 and not self.used:
            if not self.drained.is_set() and self.stats.wants("idle"):
                self.stats.emit(LimiterEvent("idle", self.name))
            self.drained.set()

    def emit(self, event: str, job: Job, **extra: Any) -> None:
        if self.stats.wants(event):
            info = LimiterEvent(event, self.name, job.group.key, job.priority, job.weight, **extra)
            self.stats.emit(info)

    # -- the queue --------------------------------------------------------------------------------

    def enqueue(self, job: Job, now: float) -> None:
        job.seq = next(self._seq)
        job.future = asyncio.get_running_loop().create_future()
        heapq.heappush(job.group.heap, job)
        self.queued += 1
        self.emit("queued", job)
        self.evaluate(job.group, now)
        self.kick()

    def hand_back(self, job: Job) -> None:
        self.handed.append(job.handed_back())
        self.fail(job, LimiterStoppedError(self.name))

    def fail(self, job: Job, error: Exception, *, dropped: bool = False) -> None:
        self.remove(job)
        assert job.future is not None
        job.future.set_exception(error)
        if dropped:
            self.stats.dropped += 1
            self.emit("dropped", job, error=error)

    def remove(self, job: Job) -> None:
        heap = job.group.heap
        heap.remove(job)
        heapq.heapify(heap)
        self.queued -= 1
        now = self.clock()
        self.keys.mark_idle(job.group, now)
        self.evaluate(job.group, now)
        self.maybe_drained()

    def hand_back_all(self) -> None:
        """Fail every queued job with ``LimiterStoppedError`` and keep it, most important
        first, in ``handed``; jobs whose rate decision is under way follow when refused."""
        self.dropping = True
        for job in sorted(job for group in self.keys.groups.values() for job in group.heap):
            self.hand_back(job)
        self._ready.clear()

    def _requeue(self, job: Job) -> None:
        heapq.heappush(job.group.heap, job)
        self.queued += 1
        if self.dropping:
            self.hand_back(job)

    # -- readiness --------------------------------------------------------------------------------

    def free(self, group: KeyGroup, job: Job, now: float) -> bool:
        """Whether ``job`` may start inline: nothing is queued or being decided ahead of it and
        everything known locally lets it start now (the rates are asked after)."""
        if group.heap or self._ready or self.deciding:
            return False
        if self.key_max is not None and group.running + job.weight > self.key_max:
            return False
        if self.g_max is not None and self.used + job.weight > self.g_max:
            return False
        key_at = max(group.halted, group.last_start + self.key_min, group.not_before)
        return max(key_at, self.halted, self.last_start + self.g_min, self.not_before) <= now

    def evaluate(self, group: KeyGroup, now: float) -> None:
        """File a group with a waiting head under ready, a timer, or (concurrency) nothing."""
        if not group.heap:
            return
        job = group.heap[0]
        if self.key_max is not None and group.running + job.weight > self.key_max:
            return  # a job of this key finishing re-evaluates it
        at = max(group.halted, group.last_start + self.key_min, group.not_before)
        if at > now:
            if group.wake_at is None or at < group.wake_at:
                group.wake_at = at
                heapq.heappush(self._timers, (at, next(self._seq), group))
                self._arm(at)
        elif group.ready_seq != job.seq:
            group.ready_seq = job.seq
            heapq.heappush(self._ready, (job.priority, job.seq, group))

    def refused(self, group: KeyGroup, verdict: Verdict, now: float) -> None:
        level, wait = verdict[0], max(verdict[1], 0.001)
        if level == KEY:
            group.not_before = now + wait
        elif level == GLOBAL:
            self.not_before = now + wait
        elif level == HALT_GLOBAL:
            self.halted = max(self.halted, now + wait)
        elif level == HALT_KEY:
            group.halted = max(group.halted, now + wait)

    async def awaited(self, pending: Awaitable[Verdict]) -> Verdict:
        """The backend's answer when it must be awaited (Redis); nothing is dispatched
        meanwhile, so decisions stay in (priority, arrival) order."""
        self.deciding = True
        self.decided.clear()
        try:
            return await pending
        finally:
            self.deciding = False
            self.decided.set()
            if self.queued:
                self.kick()

    # -- the dispatcher ---------------------------------------------------------------------------

    def kick(self) -> None:
        if self.closed:
            return
        self._wake.set()
        self.resting.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._dispatch_forever())

    def _arm(self, at: float) -> None:
        if at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        delay = max(0.0, at - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, INF
        self.kick()

    async def _dispatch_forever(self) -> None:
        while True:
            if not self._wake.is_set():
                self.resting.set()
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch()
            except Exception:  # e.g. Redis unreachable: retry soon, never wedge the queue
                _log.warning("limiter %s: rate decision failed; retrying", self.name, exc_info=True)
                self._arm(self.clock() + 0.5)

    async def _dispatch(self) -> None:
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            at, _, group = heapq.heappop(self._timers)
            if group.wake_at == at:
                group.wake_at = None
                self.evaluate(group, now)
        while self._ready and not self.deciding:
            _, seq, group = self._ready[0]
            if not group.heap or group.heap[0].seq != seq or group.ready_seq != seq:
                heapq.heappop(self._ready)
                continue
            job = group.heap[0]
            if self.g_max is not None and self.used + job.weight > self.g_max:
                break  # a finishing job kicks the dispatcher
            at = max(self.halted, self.last_start + self.g_min, self.not_before)
            if at > now:
                self._arm(at)
                break
            heapq.heappop(self._ready)
            group.ready_seq = -1
            heapq.heappop(group.heap)
            self.queued -= 1
            self.reserve(group, job)
            verdict = self.backend.acquire(group.handle, job.weight, int(now * 1000))
            if not isinstance(verdict, tuple):
                try:
                    verdict = await self.awaited(verdict)
                except BaseException:
                    self.unreserve(job)
                    self._requeue(job)
                    raise
                now = self.clock()
            assert job.future is not None
            if job.future.done():  # the caller went away while we asked
                self.unreserve(job)
                self.keys.mark_idle(group, now)
                self.maybe_drained()
            elif verdict[0] == ADMIT:
                self.started(job, now)
                job.future.set_result(None)
            else:
                self.unreserve(job)
                self.refused(group, verdict, now)
                self._requeue(job)
            self.evaluate(group, now)
        if self._timers:
            self._arm(self._timers[0][0])

    async def pump(self) -> None:
        """Evict idle keys and re-examine the queue now; return once the dispatcher has acted
        on all that is due."""
        while True:
            self.keys.sweep()
            self.kick()
            await self.resting.wait()
            if not self.deciding:
                return
            await self.decided.wait()

    async def close(self) -> None:
        """Once drained: stop the dispatcher and the timers."""
        self.closed = True
        self.keys.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
