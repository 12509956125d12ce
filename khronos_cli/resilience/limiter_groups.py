"""The limiter's inner machine: per-key groups, the ready and timer heaps, and the dispatcher.

Every key (chat, user) is a :class:`KeyGroup` with its own heap of jobs ordered by (priority,
arrival), its weighted running count, last start, rate wait and halt. A group whose head job
may start as far as its *key* is concerned sits in the ``ready`` heap, ordered by that job's
(priority, arrival); a group that must wait sits in the ``timers`` heap until then; a group
waiting for one of its own jobs to finish sits nowhere and is re-examined when one does. The
dispatcher only ever pops ready groups, checks the *global* limits (halt, spacing, weighted
slots, global rate wait) and asks the backend for the atomic rate decision, so a waiting key
never delays another. Idle groups (nothing queued or running) sit in an insertion-ordered dict
and are evicted oldest first once idle for ``idle_timeout`` and their rate state has drained.

:class:`KeyedDispatcher` is the base of ``Limiter``; it is internal to the limiter.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from khronos_cli.config import Rate
from khronos_cli.errors import LimiterStoppedError
from khronos_cli.resilience.limiter_backends import (
    ADMIT,
    GLOBAL,
    HALT_GLOBAL,
    HALT_KEY,
    KEY,
    MemoryRates,
    RedisRates,
    Verdict,
)
from khronos_cli.resilience.limiter_stats import LimiterEvent, LimiterStats

__all__ = ["INF", "Job", "KeyGroup", "KeyedDispatcher", "QueuedJob", "is_group_chat", "spacing"]

INF: Final = float("inf")
_log = logging.getLogger("khronos.limiter")


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job that never started, handed back by ``stop(drop_waiting=True)`` to be persisted."""

    key: Hashable
    priority: int
    weight: int
    fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


class Job:
    """One call waiting for (or holding) its slot."""

    __slots__ = ("args", "fn", "future", "group", "kwargs", "priority", "seq", "weight")

    def __init__(self, fn: Any, args: Any, kwargs: Any, group: KeyGroup, prio: int, w: int) -> None:
        self.fn, self.args, self.kwargs, self.group = fn, args, kwargs, group
        self.priority, self.weight, self.seq = prio, w, 0
        self.future: asyncio.Future[None] | None = None

    def __lt__(self, other: Job) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


class KeyGroup:
    """One key's queue and limits state."""

    __slots__ = ("halted", "handle", "heap", "horizon", "idle_since", "interval", "key",
                 "last_start", "not_before", "ready_seq", "running", "wake_at")  # fmt: skip

    def __init__(self, key: Hashable, handle: object, horizon: float, interval: float) -> None:
        self.key, self.handle, self.horizon, self.interval = key, handle, horizon, interval
        self.heap: list[Job] = []
        self.running = 0
        self.last_start = self.not_before = self.halted = -INF
        self.idle_since = 0.0
        self.ready_seq = -1
        self.wake_at: float | None = None


def is_group_chat(key: Hashable) -> bool:
    """Telegram group and supergroup chat ids are negative."""
    if isinstance(key, int):
        return key < 0
    return isinstance(key, str) and key.startswith("-") and key[1:].isdigit()


def spacing(rates: Sequence[Rate]) -> float:
    """Seconds per unit of the tightest rate (0 without rates)."""
    return max((rate.period / rate.limit for rate in rates), default=0.0)


class KeyedDispatcher:
    """Groups, readiness, the dispatcher and eviction; ``Limiter`` adds the public API."""

    def __init__(
        self,
        name: str,
        backend: MemoryRates | RedisRates,
        clock: Callable[[], float],
        *,
        key_limits: tuple[int | None, float, Sequence[Rate], Sequence[Rate]],
        global_limits: tuple[int | None, float],
        idle_timeout: float,
    ) -> None:
        self.name = name
        self._backend = backend
        self._clock = clock
        self._key_max, self._key_min, self._key_rates, self._group_rates = key_limits
        self._g_max, self._g_min = global_limits
        self._idle_timeout = idle_timeout
        self.stats = LimiterStats()
        self._groups: dict[Hashable, KeyGroup] = {}
        self._idle: dict[Hashable, None] = {}  # insertion order = order they went idle
        self._ready: list[tuple[int, int, KeyGroup]] = []
        self._timers: list[tuple[float, int, KeyGroup]] = []
        self._seq = itertools.count()
        self._queued = self._running = self._executing = self._used = 0
        self._last_start = self._not_before = self._halted = -INF
        self._deciding = self._dropping = self._closed = False
        self._decided = asyncio.Event()
        self._handed: list[QueuedJob] = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._resting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF
        self._sweeper: asyncio.TimerHandle | None = None

    def _reserve(self, group: KeyGroup, job: Job) -> None:
        group.running += job.weight
        self._used += job.weight

    def _unreserve(self, job: Job) -> None:
        job.group.running -= job.weight
        self._used -= job.weight

    def _mark_idle(self, group: KeyGroup, now: float) -> None:
        """A group with nothing queued or running joins the idle list (evicted later)."""
        if not group.heap and group.running == 0 and group.key not in self._idle:
            group.idle_since = now
            self._idle[group.key] = None
            if self._sweeper is None:
                self._arm_sweeper(self._evict_after(group))

    def _maybe_drained(self) -> None:
        if self._queued == 0 and self._running == 0 and self._executing == 0 and not self._used:
            if not self._drained.is_set() and self.stats.wants("idle"):
                self.stats.emit(LimiterEvent("idle", self.name))
            self._drained.set()

    def _hand_back(self, job: Job) -> None:
        self._handed.append(QueuedJob(job.group.key, job.priority, job.weight, job.fn,
                                      job.args, job.kwargs))  # fmt: skip
        self._fail(job, LimiterStoppedError(self.name))

    def _fail(self, job: Job, error: Exception, *, dropped: bool = False) -> None:
        self._remove(job)
        assert job.future is not None
        job.future.set_exception(error)
        if dropped:
            self.stats.dropped += 1
            self._emit("dropped", job, error=error)

    def _remove(self, job: Job) -> None:
        heap = job.group.heap
        heap.remove(job)
        heapq.heapify(heap)
        self._queued -= 1
        now = self._clock()
        self._mark_idle(job.group, now)
        self._evaluate(job.group, now)
        self._maybe_drained()

    def _emit(self, event: str, job: Job, **extra: Any) -> None:
        if self.stats.wants(event):
            info = LimiterEvent(event, self.name, job.group.key, job.priority, job.weight, **extra)
            self.stats.emit(info)

    def _group(self, key: Hashable, now: float) -> KeyGroup:
        group = self._groups.get(key)
        if group is None:
            rates = self._group_rates if self._group_rates and is_group_chat(key) else None
            rates = self._key_rates if rates is None else rates
            handle, horizon = self._backend.key_state(key, rates)
            group = self._groups[key] = KeyGroup(key, handle, horizon, spacing(rates))
            group.idle_since = now
        return group

    def _free(self, group: KeyGroup, job: Job, now: float) -> bool:
        """Whether everything known locally lets ``job`` start now (rates are asked after)."""
        if self._key_max is not None and group.running + job.weight > self._key_max:
            return False
        if self._g_max is not None and self._used + job.weight > self._g_max:
            return False
        key_at = max(group.halted, group.last_start + self._key_min, group.not_before)
        return max(key_at, self._halted, self._last_start + self._g_min, self._not_before) <= now

    def _evaluate(self, group: KeyGroup, now: float) -> None:
        """File a group with a waiting head under ready, a timer, or (concurrency) nothing."""
        if not group.heap:
            return
        job = group.heap[0]
        if self._key_max is not None and group.running + job.weight > self._key_max:
            return  # a job of this key finishing re-evaluates it
        at = max(group.halted, group.last_start + self._key_min, group.not_before)
        if at > now:
            if group.wake_at is None or at < group.wake_at:
                group.wake_at = at
                heapq.heappush(self._timers, (at, next(self._seq), group))
                self._arm(at)
        elif group.ready_seq != job.seq:
            group.ready_seq = job.seq
            heapq.heappush(self._ready, (job.priority, job.seq, group))

    def _refused(self, group: KeyGroup, verdict: Verdict, now: float) -> None:
        level, wait = verdict[0], max(verdict[1], 0.001)
        if level == KEY:
            group.not_before = now + wait
        elif level == GLOBAL:
            self._not_before = now + wait
        elif level == HALT_GLOBAL:
            self._halted = max(self._halted, now + wait)
        elif level == HALT_KEY:
            group.halted = max(group.halted, now + wait)

    async def _awaited(self, pending: Awaitable[Verdict]) -> Verdict:
        self._deciding = True
        self._decided.clear()
        try:
            return await pending
        finally:
            self._deciding = False
            self._decided.set()
            if self._queued:
                self._kick()

    def _kick(self) -> None:
        if self._closed:
            return
        self._wake.set()
        self._resting.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._dispatch_forever())

    def _arm(self, at: float) -> None:
        if at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        delay = max(0.0, at - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, INF
        self._kick()

    async def _dispatch_forever(self) -> None:
        while True:
            if not self._wake.is_set():
                self._resting.set()
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch()
            except Exception:  # e.g. Redis unreachable: retry soon, never wedge the queue
                _log.warning("limiter %s: rate decision failed; retrying", self.name, exc_info=True)
                self._arm(self._clock() + 0.5)

    async def _dispatch(self) -> None:
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            at, _, group = heapq.heappop(self._timers)
            if group.wake_at == at:
                group.wake_at = None
                self._evaluate(group, now)
        while self._ready and not self._deciding:
            _, seq, group = self._ready[0]
            if not group.heap or group.heap[0].seq != seq or group.ready_seq != seq:
                heapq.heappop(self._ready)
                continue
            job = group.heap[0]
            if self._g_max is not None and self._used + job.weight > self._g_max:
                break  # a finishing job kicks the dispatcher
            at = max(self._halted, self._last_start + self._g_min, self._not_before)
            if at > now:
                self._arm(at)
                break
            heapq.heappop(self._ready)
            group.ready_seq = -1
            heapq.heappop(group.heap)
            self._queued -= 1
            self._reserve(group, job)
            verdict = self._backend.acquire(group.handle, job.weight, int(now * 1000))
            if not isinstance(verdict, tuple):
                try:
                    verdict = await self._awaited(verdict)
                except BaseException:
                    self._unreserve(job)
                    self._requeue(job)
                    raise
                now = self._clock()
            assert job.future is not None
            if job.future.done():  # the caller went away while we asked
                self._unreserve(job)
                self._mark_idle(group, now)
                self._maybe_drained()
            elif verdict[0] == ADMIT:
                self._started(job, now)
                job.future.set_result(None)
            else:
                self._unreserve(job)
                self._refused(group, verdict, now)
                self._requeue(job)
            self._evaluate(group, now)
        if self._timers:
            self._arm(self._timers[0][0])

    def _requeue(self, job: Job) -> None:
        heapq.heappush(job.group.heap, job)
        self._queued += 1
        if self._dropping:
            self._hand_back(job)

    def _evict_after(self, group: KeyGroup) -> float:
        return max(self._idle_timeout, group.horizon, self._key_min)

    def _arm_sweeper(self, delay: float) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(max(0.0, delay), self._sweep)

    def _sweep(self) -> None:
        """Evict groups idle long enough; O(1) per eviction, oldest idle first."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        now = self._clock()
        evicted = 0
        while self._idle:
            key = next(iter(self._idle))
            group = self._groups[key]
            due = max(group.idle_since + self._evict_after(group), group.halted)
            if due > now:
                self._arm_sweeper(due - now)
                break
            del self._idle[key]
            del self._groups[key]
            evicted += 1
        if evicted > 1024 and len(self._groups) < evicted:  # dicts never shrink on deletion
            self._groups = dict(self._groups)
            self._idle = dict(self._idle)

    def _started(self, job: Job, now: float) -> None:
        group = job.group
        group.last_start = self._last_start = now
        self._running += 1
        self.stats.started(now)
