"""Rate backends: where a limiter's rate decisions are made, in memory or in Redis.

The scheduler (``limiter.py``) owns waiting, queueing and concurrency; a backend answers one
question for it: *may a job of this weight start now under its key's rates, the limiter's global
rates and any 429 halt, and if not, which level refused and for how long?* The answer is
atomic: either every level admits and every level is charged, or nothing is charged.

Two rate levels, two pyrate-limiter algorithms:

- **Per key** (per chat, per user): ``GCRA`` with burst 1 on a ``StateBucket``. One number per
  rate and key, so 100,000 chats cost a small object each in memory and a Redis hash that expires
  on its own. A key never gets more than ``limit`` starts in any ``period`` (a token bucket with
  burst = limit would admit about twice that across a window edge).
- **Global** (the bot's 30/s): ``SlidingWindowLog``: exactly "at most N in any window", and it
  lets the budget be used to the last unit, which even pacing (GCRA burst 1) cannot: every
  scheduling delay is lost for good there.

``guard`` (seconds) is added to every period: the slack for the time between our admission and
the upstream's own clock (transit jitter). Telegram counts arrivals, not our starts.

In memory (:class:`MemoryRates`) the decisions are the buckets' own ``put_decision``: the key's
GCRA bucket first (a refusal spends nothing), then the global window; if the global level
refuses, the key's state is put back as it was (one event loop, and the store is ours), so the
decision is all or nothing and the scarce global budget is never spent on a job its key refuses.

In Redis (:class:`RedisRates`) both levels, both halts and the global spacing (``min_time``
between any two starts, so replicas cannot burst together) are checked in **one** Lua script, one
``EVALSHA`` round trip, atomic across every process sharing the Redis, and timestamped by the
Redis server's own ``TIME``: a replica descheduled between reading its clock and reaching Redis
would otherwise book its start earlier than it really happens, and replicas on several hosts
would need clocks that agree to the millisecond. The script is ours because
pyrate's scripts each see one key, but the policy is pyrate's: the GCRA arguments come from
``GCRA.redis_args``, the blocking rank from ``SlidingWindowLog`` (whose inclusive window
``[now - interval, ...]`` the script counts), and the wait of a window refusal from
``SlidingWindowLog.retry_after``. The script's answer is read straight back (a pyrate bucket
around it cost two coroutine layers and three objects per decision, a tenth of the admission).
The script admits with a bare ``0`` and refuses with ``{level, wait, rank, now}``: the common
answer is the cheapest one to read. All keys carry the ``{bot}`` hash tag (one Redis Cluster
slot): ``khronos:{bot}:limiter:<name>:gcra:key:<key>`` (a key's arrival times),
``...:<name>:global``, ``...:<name>:last``, ``...:<name>:halt`` and ``...:<name>:halt:<key>``;
every one expires. (Halts are written with the replica's wall clock: NTP-level agreement.)
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
import uuid
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final

import pyrate_limiter as pyrate
from pyrate_limiter.utils import enforce_rate_list
from redis.exceptions import NoScriptError

from khronos_cli.config import Rate
from khronos_cli.resilience.limiter.lua import DECIDE, HALT
from khronos_cli.resilience.redis_client import REDIS_ERRORS, Client

_log = logging.getLogger("khronos.limiter")

__all__ = ["ADMIT", "GLOBAL", "HALT_GLOBAL", "HALT_KEY", "KEY", "MemoryRates", "RedisRates"]

# Which level refused: the first element of a verdict ``(level, wait_seconds)``.
ADMIT: Final = 0
KEY: Final = 1
GLOBAL: Final = 2
HALT_GLOBAL: Final = 3
HALT_KEY: Final = 4

Verdict = tuple[int, float]
_ADMITTED: Final[Verdict] = (ADMIT, 0.0)
_GCRA: Final = pyrate.GCRA()
_WINDOW: Final = pyrate.SlidingWindowLog()


def pyrate_rates(rates: Sequence[Rate], guard: float, *, smooth: bool) -> list[pyrate.Rate]:
    """Our rates as pyrate's (milliseconds), ``guard`` added to each period; ``smooth``: burst 1.

    Raises ``ValueError`` when pyrate refuses the list (it wants rates that get looser as the
    period grows, e.g. ``1/s`` then ``20/min``).
    """
    converted = [
        pyrate.Rate(r.limit, max(1, round((r.period + guard) * 1000)), 1 if smooth else None)
        for r in rates
    ]
    converted.sort(key=lambda rate: rate.interval)
    if converted:
        enforce_rate_list(converted)
    return converted


def _horizon(rates: Sequence[pyrate.Rate]) -> float:
    """Seconds after which a GCRA state no longer constrains anything (``burst`` emissions)."""
    return max((rate.burst * rate.interval / rate.limit for rate in rates), default=0) / 1000


class _LoopStateStore(pyrate.StateStore):
    """pyrate ``StateStore`` for one event loop: the state is a plain attribute.

    The limiter runs on one loop, so pyrate's ``InMemoryStateStore`` RLock buys nothing and
    costs memory for every one of 100,000 chats.
    """

    __slots__ = ("state",)
    is_async = False

    def __init__(self) -> None:
        self.state: tuple[float, ...] | None = None

    def check(
        self, algorithm: pyrate.StateAlgorithm, rates: list[pyrate.Rate], now: int, weight: int
    ) -> pyrate.Decision:
        state = self.state if self.state is not None else algorithm.initial(rates)
        self.state, decision = algorithm.step(rates, state, now, weight)
        return decision

    def read(self, algorithm: pyrate.StateAlgorithm, rates: list[pyrate.Rate]) -> Any:
        return self.state if self.state is not None else algorithm.initial(rates)

    def reset(self) -> None:
        self.state = None


def _wait(decision: pyrate.Decision) -> float:
    """Seconds to wait from a refusal; a weight that can never fit waits "forever" (1 h)."""
    return 3600.0 if decision.retry_after_ms is None else decision.retry_after_ms / 1000


class MemoryRates:
    """Rate decisions in this process, on pyrate's in-memory buckets."""

    name = "memory"

    def __init__(
        self,
        global_rates: Sequence[Rate] = (),
        *,
        guard: float = 0.0,
        key_guard: float | None = None,
    ) -> None:
        self.guard = guard
        self.key_guard = guard if key_guard is None else key_guard
        rates = pyrate_rates(global_rates, guard, smooth=False)
        self._global = pyrate.InMemoryBucket(rates) if rates else None
        self._global_horizon = _horizon(rates)
        self._leaked_at = 0

    def key_state(self, key: Hashable, rates: Sequence[Rate]) -> tuple[object, float]:
        """The per-key handle the scheduler keeps on its group, and its state's horizon (s)."""
        converted = pyrate_rates(rates, self.key_guard, smooth=True)
        if not converted:
            return None, 0.0
        return pyrate.StateBucket(converted, _GCRA, _LoopStateStore()), _horizon(converted)

    def acquire(self, handle: object, weight: int, now_ms: int) -> Verdict:
        """Charge ``weight`` at ``now_ms`` on both levels, or say who refused and for how long."""
        bucket = handle if isinstance(handle, pyrate.StateBucket) else None
        saved = None
        if bucket is not None:
            store = bucket.store
            assert isinstance(store, _LoopStateStore)
            saved = store.state
            decision = bucket.put_decision(pyrate.RateItem("key", now_ms, weight))
            assert isinstance(decision, pyrate.Decision)
            if not decision.allowed:  # a refusal spends nothing (GCRA.step)
                return KEY, _wait(decision)
        if self._global is not None:
            decision = self._global.put_decision(pyrate.RateItem("global", now_ms, weight))
            assert isinstance(decision, pyrate.Decision)
            if not decision.allowed:
                if bucket is not None:  # give the key back what it was charged: all or nothing
                    bucket.store.state = saved  # type: ignore[attr-defined]
                return GLOBAL, _wait(decision)
            if now_ms - self._leaked_at > 1000:  # keep the log at one window's worth
                self._leaked_at = now_ms
                self._global.leak(now_ms)
        return _ADMITTED

    async def aclose(self) -> None:
        """Nothing to release."""


class _RedisKey:
    """One key's handle in Redis mode: its state key, rates and the script arguments for them
    (and, while Redis is unreachable, the local handle that stands in for it)."""

    __slots__ = (
        "args",
        "halt",
        "key",
        "keys",
        "local",
        "name",
        "packed",
        "rates",
        "source",
        "ttl_ms",
    )

    def __init__(
        self,
        name: str,
        halt: str,
        rates: list[pyrate.Rate],
        key: Hashable = None,
        source: Sequence[Rate] = (),
    ) -> None:
        self.key = key
        self.source = tuple(source)
        self.local: tuple[MemoryRates, object] | None = None
        self.name = name
        self.halt = halt
        self.rates = rates
        self.args: list[int | float] = [len(rates), *_GCRA.redis_args(rates)]
        self.ttl_ms = math.ceil(2000 * _horizon(rates)) if rates else 1
        self.packed = _pack([self.ttl_ms, *self.args])  # the end of the script's ARGV[1]
        self.keys: list[bytes] = []  # numkeys, then the script's KEYS, encoded once (key_state)


def _pack(numbers: Sequence[int | float]) -> bytes:
    """Numbers as one script argument: little-endian doubles (Lua's ``struct.unpack`` reads them
    back; every number here is an integer below 2**53 or a float, so none changes)."""
    return struct.pack(f"<{len(numbers)}d", *numbers)


# A decision stamped by the Redis server's own clock; and one that also keeps the global window
# up (drops the starts that left it, pushes its expiry back).
_SERVER_TIME: Final = _pack([0, 0])
_SERVER_TIME_UPKEEP: Final = _pack([0, 1])
_UPKEEP_EVERY = 16  # a client's decisions between two upkeeps of the global window, at most


class RedisRates:
    """Rate decisions shared by every process on one Redis: one round trip per decision.

    When Redis cannot answer, decisions fall back to local buckets whose budgets are the shared
    ones divided by the replica count last seen (``replicas``, set by the worker): stricter than
    the shared budget, so that N replicas that all lost Redis still stay inside it together. The
    next decision Redis answers ends the fallback.
    """

    def __init__(
        self,
        redis: Client,
        limiter: str,
        global_rates: Sequence[Rate] = (),
        *,
        bot: str = "bot",
        namespace: str | None = None,
        guard: float = 0.0,
        key_guard: float | None = None,
        min_time: float = 0.0,
        server_time: bool = True,
        owns_client: bool = False,
    ) -> None:
        self.redis = redis
        self._min_ms = round(min_time * 1000)
        self._server_time = server_time
        self.guard = guard
        self.key_guard = guard if key_guard is None else key_guard
        self.prefix = f"{namespace or f'khronos:{{{bot}}}'}:limiter:{limiter}"
        self.global_rates = pyrate_rates(global_rates, guard, smooth=False)
        self._global_ttl = max((2 * r.interval for r in self.global_rates), default=1)
        self._sha = hashlib.sha1(DECIDE.encode()).hexdigest().encode()
        self._halt_script = redis.register_script(HALT)
        self._owns_client = owns_client
        self._member = uuid.uuid4().hex[:12].encode()
        self._counter = 0
        self._upkeep_due: float = -math.inf  # now_ms by which this client next keeps the window up
        self._source_global = tuple(global_rates)
        self._global_args: dict[int, bytes] = {}  # by job weight
        self.replicas: Callable[[], int] = lambda: 1
        self.degraded = False
        self._local: MemoryRates | None = None
        self._local_share = 0

    @property
    def name(self) -> str:
        return "redis (lost: local limits)" if self.degraded else "redis"

    def key_state(self, key: Hashable, rates: Sequence[Rate]) -> tuple[object, float]:
        """The per-key handle (hash name, script arguments) and the key's state horizon (s)."""
        converted = pyrate_rates(rates, self.key_guard, smooth=True)
        suffix = "all" if key is None else f"key:{key}"
        handle = _RedisKey(
            f"{self.prefix}:gcra:{suffix}", f"{self.prefix}:halt:{suffix}", converted, key, rates
        )
        names = [handle.name, f"{self.prefix}:global", f"{self.prefix}:halt", handle.halt]
        names.append(f"{self.prefix}:last")
        handle.keys = [b"%d" % len(names), *(name.encode() for name in names)]
        return handle, _horizon(converted)

    async def acquire(self, handle: object, weight: int, now_ms: int) -> Verdict:
        """One ``EVALSHA``: halts, key GCRA and global window, all or nothing."""
        assert isinstance(handle, _RedisKey)
        try:
            verdict = await self.run_script(handle, weight, now_ms)
        except REDIS_ERRORS as exc:
            return self._decide_locally(handle, weight, now_ms, exc)
        if self.degraded:
            self.degraded = False
            _log.info("limiter %s: redis answers again, back on the shared budget", self.prefix)
        return verdict

    def _decide_locally(
        self, handle: _RedisKey, weight: int, now_ms: int, exc: BaseException
    ) -> Verdict:
        share = max(1, int(self.replicas()))
        if self._local is None or share != self._local_share:
            scaled = [Rate(r.limit, r.period * share) for r in self._source_global]
            local = MemoryRates(scaled, guard=self.guard, key_guard=self.key_guard)
            self._local, self._local_share = local, share
        if not self.degraded:
            self.degraded = True
            _log.warning(
                "limiter %s: redis unreachable (%s); local limits, 1/%d of the shared budget",
                self.prefix,
                exc,
                share,
            )
        if handle.local is None or handle.local[0] is not self._local:
            scaled_key = [Rate(r.limit, r.period * share) for r in handle.source]
            handle.local = (self._local, self._local.key_state(handle.key, scaled_key)[0])
        return self._local.acquire(handle.local[1], weight, now_ms)

    async def run_script(self, handle: _RedisKey, weight: int, now_ms: int) -> Verdict:
        self._counter += 1
        # Upkeep at least every quarter of the window's expiry too: a start added in between
        # then outlives its window even if no client pushes the expiry back meanwhile.
        upkeep = not self._counter % _UPKEEP_EVERY or now_ms >= self._upkeep_due
        if self._server_time:
            stamp = _SERVER_TIME_UPKEEP if upkeep else _SERVER_TIME
        else:
            stamp = _pack([now_ms, upkeep])
        limiter = self._global_args.get(weight) or self._pack_global(weight)
        # Every argument as bytes: redis-py would encode each one again on every call.
        args = (stamp + limiter + handle.packed, b"%s:%d:" % (self._member, self._counter))
        try:
            reply = await self.redis.execute_command("EVALSHA", self._sha, *handle.keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: load it once more
            await self.redis.script_load(DECIDE)
            reply = await self.redis.execute_command("EVALSHA", self._sha, *handle.keys, *args)
        if reply == 0:
            if upkeep:  # only an admitted decision reaches the upkeep
                self._upkeep_due = now_ms + self._global_ttl // 4
            return _ADMITTED
        level, now = int(reply[0]), int(reply[3])
        if level == GLOBAL and int(reply[2]) < 0:  # the shared spacing
            return GLOBAL, int(reply[1]) / 1000
        if level == GLOBAL:
            blocking = int(reply[1])
            rate = self.global_rates[int(reply[2])]
            ms = _WINDOW.retry_after(rate, now, None if blocking < 0 else blocking)
            return GLOBAL, max(ms, 1) / 1000
        return level, int(reply[1]) / 1000

    def _pack_global(self, weight: int) -> bytes:
        """The limiter's numbers for a job of ``weight`` (the script's ARGV[1] after the time),
        packed once."""
        numbers: list[int | float] = [weight, len(self.global_rates)]
        for rate in self.global_rates:
            rank = _WINDOW.blocking_offset(rate, weight)
            numbers += [rate.interval, rate.limit, -1 if rank is None else rank]
        numbers += [max((rate.interval for rate in self.global_rates), default=0)]
        numbers += [self._global_ttl, self._min_ms]
        packed = self._global_args[weight] = _pack(numbers)
        return packed

    async def write_halt(self, until_ms: int, ttl_ms: int, key: Hashable | None) -> None:
        """Share a 429 halt: the longest one wins, and the Redis key expires with it."""
        name = f"{self.prefix}:halt" if key is None else f"{self.prefix}:halt:key:{key}"
        try:
            await self._halt_script(keys=[name], args=[until_ms, max(1, ttl_ms)])
        except REDIS_ERRORS as exc:  # the local halt still holds
            _log.warning("limiter %s: could not share a halt (%s)", self.prefix, exc)

    async def aclose(self) -> None:
        """Close the Redis client when this backend created it."""
        if self._owns_client:
            await self.redis.aclose()
