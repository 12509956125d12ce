"""Limiter benchmark: admission cost, precision at Telegram's limits, 4 processes, memory.

    .venv/bin/python benchmarks/limiter.py            # full run (~10 min)
    .venv/bin/python benchmarks/limiter.py --quick    # 600 messages to 200 chats, 20k keys
    .venv/bin/python benchmarks/limiter.py --loop asyncio   # on asyncio's own loop instead

Everything runs on uvloop, the loop khronos's worker runs, unless ``--loop asyncio`` says
otherwise. The loop matters to the Redis ratio: a PING's round trip costs the client less on
uvloop, so the same decision is a larger multiple of it (asyncio's own loop hides part of the
script's time in Redis under its own slower wake-ups).

Sections, printed side by side with pyrate-limiter's own ``try_acquire_async`` and aiolimiter:

1. the cost of an uncontended admission, in memory and on Redis (against a redis-py PING, and
   two floors: a script that returns 0, and one that makes the decision's five Redis commands
   with none of its logic; pyrate-limiter on Redis both as one window and with the same two
   levels as khronos, a GCRA bucket per key and a window for all);
2. precision: N messages to C chats (10 % group chats) through the ``telegram`` limiter against
   a counting HTTP server on 127.0.0.1, in a process of its own, that stamps each arrival and
   counts sliding 1 s windows over 30/s, per-chat gaps under 1 s and 60 s windows over 20 per
   group; rate achieved = (arrivals - 1) / (last - first) as a share of 30/s;
3. the same with 4 processes sharing one Redis;
4. memory after 100,000 distinct chats and after they go idle.

Needs ``redis-server`` on PATH (started on a free port for the run). Prints, never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pyrate_limiter as pyrate
import uvloop
from aiohttp import web
from aiolimiter import AsyncLimiter
from pyrate_limiter.buckets.redis_state import RedisStateStore
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import free_port, redis_server
from khronos_cli.config import LIMITER_DEFAULTS, LimiterSettings, Rate
from khronos_cli.resilience.limiter.backends import RedisRates
from khronos_cli.resilience.limiter.limiter import Limiter
from khronos_cli.resilience.limiter.registry import (
    TELEGRAM_GUARD,
    TELEGRAM_KEY_GUARD,
    TELEGRAM_REDIS_GUARD,
)
from khronos_cli.resilience.redis_client import connect

BOT_RATE, CHAT_GAP, GROUP_LIMIT, GROUP_PERIOD = 30, 1.0, 20, 60.0


# -- helpers ----------------------------------------------------------------------------------


async def per_call(fn: Callable[[int], Awaitable[Any]], n: int, repeat: int = 3) -> float:
    """Best-of-``repeat`` mean seconds per call of ``await fn(i)``."""
    best = float("inf")
    for r in range(repeat):
        start = time.perf_counter()
        for i in range(n):
            await fn(r * n + i)
        best = min(best, (time.perf_counter() - start) / n)
    return best


def chats(count: int) -> list[int]:
    """``count`` chat ids, one in ten a group (negative id)."""
    return [-(1000 + c) if c % 10 == 0 else 1000 + c for c in range(count)]


def messages(total: int, chat_ids: list[int], order: str) -> list[int]:
    """``broadcast``: one message to every chat in turn (the bot's 30/s binds throughout);
    ``chat-major``: all of one chat's messages, then the next (per-chat limits bind, and the
    last chats' 1 s / 3 s spacing makes a tail no limiter can fill)."""
    if order == "broadcast":
        return [chat_ids[i % len(chat_ids)] for i in range(total)]
    per = -(-total // len(chat_ids))
    return [chat for chat in chat_ids for _ in range(per)][:total]


# -- section 1: admission cost ----------------------------------------------------------------


async def admission(redis_url: str, n: int) -> list[tuple[str, str, str]]:
    async def noop() -> None:
        return None

    base = await per_call(lambda i: noop(), n)
    concurrency = Limiter(LimiterSettings("bench", max_concurrent=100))
    keyed = LimiterSettings(
        "bench",
        group_by="chat",
        max_concurrent=1,
        rates=(Rate(1, 0.001),),
        global_rates=(Rate(10**9, 1.0),),
    )
    ours_keyed = Limiter(keyed)
    # Every row runs the same job (await noop()) after its admission, and none subtracts the
    # bare loop: the first row is that loop, for reference.
    plain = await per_call(lambda i: concurrency.schedule(noop), n)
    pool = 5000  # keys reused (each at most 1/ms), so no group is created in the timed runs
    rated = await per_call(lambda i: ours_keyed.schedule(noop, key=i % pool), n)
    fresh = await per_call(lambda i: ours_keyed.schedule(noop, key=f"new{i}"), n // 4)
    await concurrency.aclose()
    await ours_keyed.aclose()
    pyrate_mem = pyrate.Limiter(pyrate.InMemoryBucket([pyrate.Rate(10**9, 1000)]))

    async def pyrate_call(i: int) -> None:
        await pyrate_mem.try_acquire_async("x")
        await noop()

    pyr = await per_call(pyrate_call, n)
    keyed_pyrate = per_key_pyrate(lambda key: pyrate.Rate(1, 1), pyrate.Rate(10**9, 1000))

    async def pyrate_keyed_call(i: int) -> None:
        await keyed_pyrate(i % pool)
        await noop()

    pyr_keyed = await per_call(pyrate_keyed_call, n)
    aio = AsyncLimiter(10**9, 1)

    async def aio_call(i: int) -> None:
        async with aio:
            await noop()

    aiol = await per_call(aio_call, n)
    rows = [
        ("memory: the loop and `await noop()` alone", f"{base * 1e6:.1f} µs", "in every row"),
        ("memory: khronos schedule(), concurrency only", f"{plain * 1e6:.1f} µs", "goal ≤ 5 µs"),
        ("memory: khronos schedule(), key GCRA + global window", f"{rated * 1e6:.1f} µs", ""),
        ("memory: same, a new key each call", f"{fresh * 1e6:.1f} µs", "creates the group"),
        ("memory: pyrate try_acquire_async, one bucket", f"{pyr * 1e6:.1f} µs", ""),
        (
            "memory: pyrate, key buckets (BucketFactory) + global",
            f"{pyr_keyed * 1e6:.1f} µs",
            f"khronos {rated / pyr_keyed:.2f}x (goal ≤ 1x)",
        ),
        ("memory: aiolimiter acquire", f"{aiol * 1e6:.1f} µs", ""),
    ]
    rows += await redis_admission(redis_url, n, keyed, noop)
    return rows


# A script that makes the five Redis commands of a chat's decision (TIME, MGET, ZCOUNT, SET,
# ZADD) on the same keys, with none of the decision's logic: what any one-script decision with
# these guarantees costs, whatever its Lua does.
FIVE_COMMANDS = """
redis.call('TIME')
redis.call('MGET', KEYS[3], KEYS[4], KEYS[5], KEYS[1])
redis.call('ZCOUNT', KEYS[2], 0, '+inf')
redis.call('SET', KEYS[1], 'abcdefgh', 'PX', 2)
redis.call('ZADD', KEYS[2], 1, ARGV[2])
return 0
"""


async def redis_admission(
    redis_url: str, n: int, keyed: LimiterSettings, noop: Callable[[], Awaitable[None]]
) -> list[tuple[str, str, str]]:
    """The Redis rows: PINGs, the floors of a script, khronos, and pyrate-limiter twice."""
    # khronos on the client the worker builds (redis_client.connect); pyrate on a plain redis-py
    # client, as its docs show. PING runs on both; the ratios are to the quicker one.
    client = Redis.from_url(redis_url)
    ours_client = connect(redis_url)
    await client.flushall()
    rn = max(200, n // 25)
    ours_redis = Limiter(keyed, redis=ours_client)
    backend = ours_redis.backend
    assert isinstance(backend, RedisRates)
    handles = [backend.key_state(k, keyed.rates)[0] for k in range(rn)]
    # The floors run with a decision's own keys and arguments, packed as the decision packs them.
    sha_nothing = await ours_client.script_load("return 0")
    sha_five = await ours_client.script_load(FIVE_COMMANDS)
    limiter_args = backend._pack_global(1)

    def floor(sha: str) -> Callable[[int], Awaitable[Any]]:
        def call(i: int) -> Awaitable[Any]:
            handle = handles[i % rn]
            packed = bytes(16) + limiter_args + handle.packed
            member = b"floor:%d:" % i
            return ours_client.execute_command("EVALSHA", sha, *handle.keys, packed, member)

        return call

    bucket = await pyrate.RedisBucket.init([pyrate.Rate(10**9, 1000)], client, "bench:pyrate")
    pyrate_redis = pyrate.Limiter(bucket)

    async def pyrate_redis_call(i: int) -> None:
        await pyrate_redis.try_acquire_async("x")
        await noop()

    same_work = per_key_pyrate_redis(client, pyrate.Rate(1, 1), pyrate.Rate(10**9, 1000))

    async def pyrate_same_work(i: int) -> None:
        await same_work(i % rn)
        await noop()

    # rn keys, each reused once per pass (every 200 µs or so: far from its 1/ms), so the passes
    # after the first create no key, like the memory rows'. The rows take turns, pass by pass,
    # so that the machine's moods reach each of them alike; each keeps its best pass.
    redis_rows: dict[str, Callable[[int], Awaitable[Any]]] = {
        "ping": lambda i: client.ping(),
        "ping, khronos's client": lambda i: ours_client.ping(),
        "nothing": floor(sha_nothing),
        "five": floor(sha_five),
        "ours": lambda i: ours_redis.schedule(noop, key=i % rn),
        "pyrate": pyrate_redis_call,
        "pyrate, same work": pyrate_same_work,
    }
    best = dict.fromkeys(redis_rows, float("inf"))
    for _ in range(15):
        for name, call in redis_rows.items():
            best[name] = min(best[name], await per_call(call, rn, repeat=1))
    ping = min(best["ping"], best["ping, khronos's client"])
    goal = "met" if best["ours"] / ping <= 1.5 else "NOT met"
    notes = {
        "ping": ("redis: redis-py PING (one round trip)", ""),
        "ping, khronos's client": ("redis: PING on khronos's client (hiredis packs)", ""),
        "nothing": ("redis: a script that returns 0 (any script's floor)", ""),
        "five": ("redis: a script making the decision's five commands, no logic", ""),
        "ours": ("redis: khronos schedule() (one EVALSHA)", f"goal ≤ 1.5x: {goal}"),
        "pyrate": ("redis: pyrate try_acquire_async (RedisBucket, one window, no key)", ""),
        "pyrate, same work": (
            "redis: pyrate, a GCRA StateBucket per key (RedisStateStore) + a global RedisBucket",
            "the same two levels",
        ),
    }
    rows = []
    for name, (label, note) in notes.items():
        ratio = f"{best[name] / ping:.2f}x the quicker PING"
        rows.append((label, f"{best[name] * 1e6:.0f} µs", f"{ratio}; {note}" if note else ratio))
    await ours_redis.aclose()
    pyrate_redis.close()
    await client.aclose()
    await ours_client.aclose()
    return rows


# -- section 2 and 3: precision against a counting server ------------------------------------


class CountingServer:
    """A loopback HTTP server that stamps every message's arrival, per chat."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals.append((time.time(), int(body["chat_id"])))
        return web.json_response({"ok": True, "result": {}})

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response(self.arrivals)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot/sendMessage", self.handle)
        app.router.add_get("/arrivals", self.dump)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/bot/sendMessage"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def report(self, label: str, expected: int) -> tuple[str, ...]:
        """Rate = arrivals in the first whole seconds of the run / those seconds (fair to both
        bursts and even pacing); windows over: bot 30/s, chat 1/s, group 20/min."""
        times = sorted(t for t, _ in self.arrivals)
        bot = sum(1 for i in range(len(times) - BOT_RATE) if times[i + BOT_RATE] - times[i] < 1)
        by_chat: dict[int, list[float]] = {}
        for t, chat in sorted(self.arrivals):
            by_chat.setdefault(chat, []).append(t)
        over = {1: 0, GROUP_LIMIT: 0}
        for chat, ts in by_chat.items():
            limit, period = (GROUP_LIMIT, GROUP_PERIOD) if chat < 0 else (1, CHAT_GAP)
            over[limit] += sum(1 for i in range(len(ts) - limit) if ts[i + limit] - ts[i] < period)
        whole = int(times[-1] - times[0]) if times else 0
        rate = sum(1 for t in times if t < times[0] + whole) / whole if whole else 0.0
        spans = [times[i + BOT_RATE] - times[i] for i in range(len(times) - BOT_RATE)]
        self.tightest = min(spans, default=0.0)  # 31 arrivals within this: under 1 s is over
        total = bot + over[1] + over[GROUP_LIMIT]
        detail = f"{total} (bot {bot}, chat {over[1]}, group {over[GROUP_LIMIT]}); "
        detail += f"tightest 31 in {self.tightest * 1000:.0f} ms"
        return (
            label,
            f"{len(times)}/{expected}",
            f"{rate:.2f}/s",
            f"{rate / BOT_RATE:.1%}",
            detail,
        )


class RemoteCounter(CountingServer):
    """The counting server in a process of its own (as Telegram's clock is not ours)."""

    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        cmd = [sys.executable, __file__, "--server"]
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        self.proc = await asyncio.create_subprocess_exec(*cmd, **pipes)  # type: ignore[arg-type]
        assert self.proc.stdout is not None
        self.url = (await self.proc.stdout.readline()).decode().strip()

    async def stop(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        url = self.url.replace("/bot/sendMessage", "/arrivals")
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            self.arrivals = [(t, chat) for t, chat in await reply.json()]
        self.proc.stdin.close()
        await self.proc.wait()


async def serve_counter() -> None:
    server = CountingServer()
    await server.start()
    print(server.url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    await server.stop()


def telegram(min_time: float | None) -> LimiterSettings:
    settings = LIMITER_DEFAULTS["telegram"]
    return settings if min_time is None else dataclasses.replace(settings, global_min_time=min_time)


async def send_all(
    plan: list[int], url: str, acquire: Callable[[int], Awaitable[None]] | None, limiter: Any
) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def send(chat: int) -> None:
            async with session.post(url, json={"chat_id": chat, "text": "hi"}) as response:
                await response.read()

        async def one(chat: int) -> None:
            if limiter is not None:
                await limiter.schedule(send, chat, key=chat)
            else:
                assert acquire is not None
                await acquire(chat)
                await send(chat)

        await asyncio.gather(*(one(chat) for chat in plan), return_exceptions=True)


async def precision(args: argparse.Namespace, redis_url: str) -> list[tuple[str, ...]]:
    plan = messages(args.messages, chats(args.chats), args.order)
    budget = len(plan) / BOT_RATE * 1.3 + 5  # comparison runs are cut off here
    rows = []
    variants: list[tuple[str, Any]] = [
        (
            f"khronos, spacing {ms * 1000:g} ms{' (DESIGN)' if ms == 0.035 else ''}, "
            f"guard {(args.guard or TELEGRAM_GUARD) * 1000:g} ms",
            ms,
        )
        for ms in args.min_times
    ]
    guard_s = args.guard or TELEGRAM_GUARD  # the anchors get the same slack in each period
    if args.compare:
        variants += [(f"pyrate (per chat + global), guard {guard_s * 1000:g} ms", "pyrate")]
        variants += [(f"aiolimiter (per chat + global), guard {guard_s * 1000:g} ms", "aio")]
    for label, variant in variants:
        server = RemoteCounter()
        await server.start()
        limiter, acquire = None, None
        if isinstance(variant, float):
            guard = args.guard or TELEGRAM_GUARD  # a chat's own periods get more, as shipped
            key_guard = max(guard, TELEGRAM_KEY_GUARD)
            limiter = Limiter(telegram(variant), guard=guard, key_guard=key_guard)
        elif variant == "pyrate":
            acquire = pyrate_acquire(guard_s)
        else:
            acquire = aiolimiter_acquire(guard_s)
        try:
            await asyncio.wait_for(send_all(plan, server.url, acquire, limiter), budget)
        except TimeoutError:
            label += f" (cut at {budget:.0f} s)"
        if limiter is not None:
            await limiter.aclose()
        await server.stop()
        rows.append(server.report(label, len(plan)))
        print("  ", " | ".join(rows[-1]), flush=True)
    return rows


class PerKey(pyrate.BucketFactory):
    """pyrate-limiter's recipe for a limit per key: a ``BucketFactory`` that makes a bucket per
    item name (``make(name)``) and stamps items with ``clock``."""

    def __init__(
        self, make: Callable[[str], pyrate.AbstractBucket], clock: pyrate.AbstractClock
    ) -> None:
        self.buckets: dict[str, pyrate.AbstractBucket] = {}
        self.make, self.clock = make, clock

    def wrap_item(self, name: str, weight: int = 1) -> pyrate.RateItem:
        return pyrate.RateItem(name, self.clock.now(), weight)

    def get(self, item: pyrate.RateItem) -> pyrate.AbstractBucket:
        if item.name not in self.buckets:
            self.buckets[item.name] = self.make(item.name)
        return self.buckets[item.name]


def per_key_pyrate(
    rate_of: Callable[[str], pyrate.Rate], total: pyrate.Rate
) -> Callable[[int], Awaitable[None]]:
    """pyrate-limiter's way to a limit per key and one for all: a bucket per item name (its
    docs' recipe) at ``rate_of(name)``, then a second limiter for the total."""
    keys = pyrate.Limiter(
        PerKey(lambda name: pyrate.InMemoryBucket([rate_of(name)]), pyrate.MonotonicClock())
    )
    everyone = pyrate.Limiter(pyrate.InMemoryBucket([total]))

    async def acquire(key: int) -> None:
        await keys.try_acquire_async(str(key))
        await everyone.try_acquire_async("all")

    return acquire


def per_key_pyrate_redis(
    redis: Redis, key_rate: pyrate.Rate, total: pyrate.Rate
) -> Callable[[int], Awaitable[None]]:
    """The same two levels on Redis, pyrate-limiter's way: a GCRA ``StateBucket`` on a
    ``RedisStateStore`` per item name, then a limiter on a ``RedisBucket`` for the total (two
    round trips, one per level)."""

    def make(name: str) -> pyrate.AbstractBucket:
        store = RedisStateStore(redis, f"bench:pyrate:key:{name}")
        return pyrate.StateBucket([key_rate], pyrate.GCRA(), store)

    keys = pyrate.Limiter(PerKey(make, pyrate.WallClock()))
    everyone: list[pyrate.Limiter] = []

    async def acquire(key: int) -> None:
        if not everyone:
            bucket = await pyrate.RedisBucket.init([total], redis, "bench:pyrate:all")
            everyone.append(pyrate.Limiter(bucket))
        await keys.try_acquire_async(str(key))
        await everyone[0].try_acquire_async("all")

    return acquire


def pyrate_acquire(guard: float) -> Callable[[int], Awaitable[None]]:
    """Per-chat and bot buckets, each period longer by ``guard`` (as khronos's are)."""
    slack = round(guard * 1000)
    group, private = pyrate.Rate(20, 60_000 + slack), pyrate.Rate(1, 1000 + slack)
    bot = pyrate.Rate(BOT_RATE, 1000 + slack)
    return per_key_pyrate(lambda chat: group if chat.startswith("-") else private, bot)


def aiolimiter_acquire(guard: float) -> Callable[[int], Awaitable[None]]:
    """Per-chat and bot limiters, each period longer by ``guard`` (as khronos's are)."""
    bot = AsyncLimiter(BOT_RATE, 1 + guard)
    per_chat: dict[int, AsyncLimiter] = {}

    async def acquire(chat: int) -> None:
        if chat not in per_chat:
            per_chat[chat] = (
                AsyncLimiter(20, 60 + guard) if chat < 0 else AsyncLimiter(1, 1 + guard)
            )
        await per_chat[chat].acquire()
        await bot.acquire()

    return acquire


async def worker(url: str, redis_url: str, plan: list[int], min_time: float, guard: float) -> None:
    client = Redis.from_url(redis_url)
    key_guard = max(guard, TELEGRAM_KEY_GUARD)  # as shipped
    limiter = Limiter(telegram(min_time), redis=client, guard=guard, key_guard=key_guard)
    await client.ping()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the start line
    await send_all(plan, url, None, limiter)
    await limiter.aclose()
    await client.aclose()


async def shared(args: argparse.Namespace, redis_url: str) -> tuple[str, ...]:
    plan = messages(args.messages, chats(args.chats), args.order)
    server = RemoteCounter()
    await server.start()
    client = Redis.from_url(redis_url)
    await client.flushall()
    procs = []
    for p in range(args.processes):
        mine = json.dumps(plan[p :: args.processes])
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            server.url,
            redis_url,
            mine,
            str(args.min_times[-1]),
            str(args.guard or TELEGRAM_REDIS_GUARD),
        ]
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        procs.append(await asyncio.create_subprocess_exec(*cmd, **pipes))  # type: ignore[arg-type]
    for proc in procs:  # every worker connected: start them together
        assert proc.stdout is not None
        await proc.stdout.readline()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    for proc in procs:
        await proc.communicate()
    await client.aclose()
    label = f"khronos, {args.processes} processes on one Redis, {args.min_times[-1] * 1000:g} ms"
    label += f", guard {(args.guard or TELEGRAM_REDIS_GUARD) * 1000:g} ms"
    await server.stop()
    return server.report(label, len(plan))


# -- section 4: memory ------------------------------------------------------------------------


async def memory(keys: int, redis_url: str) -> list[tuple[str, str, str]]:
    async def noop() -> None:
        return None

    settings = dataclasses.replace(
        LIMITER_DEFAULTS["telegram"], global_rates=(), global_min_time=0.0, idle_timeout=1.0
    )
    gc.collect()
    tracemalloc.start()
    limiter = Limiter(settings)
    await asyncio.gather(*(limiter.schedule(noop, key=1000 + k) for k in range(keys)))
    gc.collect()
    full = tracemalloc.get_traced_memory()[0]
    await asyncio.sleep(settings.idle_timeout + 0.5)
    gc.collect()
    idle = tracemalloc.get_traced_memory()[0]
    count = limiter.snapshot()["keys"]
    await limiter.aclose()
    pyr = {k: pyrate.InMemoryBucket([pyrate.Rate(1, 1000)]) for k in range(keys)}
    for bucket in pyr.values():
        bucket.put(pyrate.RateItem("x", 0))
    gc.collect()
    pyr_mem = tracemalloc.get_traced_memory()[0] - idle
    del pyr
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    aio = {k: AsyncLimiter(1, 1) for k in range(keys)}
    aio_mem = tracemalloc.get_traced_memory()[0] - base
    del aio
    tracemalloc.stop()
    client = Redis.from_url(redis_url)
    await client.flushall()
    before = (await client.info("memory"))["used_memory"]
    on_redis = Limiter(settings, redis=client)
    await asyncio.gather(*(on_redis.schedule(noop, key=1000 + k) for k in range(keys)))
    after = (await client.info("memory"))["used_memory"]
    redis_keys = await client.dbsize()
    await asyncio.sleep(2.5)  # the 1/s GCRA keys live two emission intervals
    expired = await client.dbsize()
    await on_redis.aclose()
    await client.aclose()
    mib = 1024 * 1024
    return [
        (f"khronos memory, {keys:,} chats seen", f"{full / mib:.1f} MiB", f"{keys:,} keys"),
        ("khronos memory, after idle eviction", f"{idle / mib:.2f} MiB", f"{count} keys"),
        (f"pyrate, {keys:,} per-chat buckets (never evicted)", f"{pyr_mem / mib:.1f} MiB", ""),
        (f"aiolimiter, {keys:,} per-chat limiters (never evicted)", f"{aio_mem / mib:.1f} MiB", ""),
        (
            "khronos on Redis: Redis used_memory growth",
            f"{(after - before) / mib:.1f} MiB",
            f"{redis_keys:,} keys, {expired:,} after 2.5 s",
        ),
    ]


# -- main -------------------------------------------------------------------------------------


def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


async def main(args: argparse.Namespace) -> None:
    with redis_server() as redis_process:
        redis_url = redis_process.url
        version = sys.version.split()[0]
        plan = f"{args.messages} messages to {args.chats} chats, {args.order} order"
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(
            f"python {version}, {os.cpu_count()} cores, pyrate {pyrate.__version__}, "
            f"event loop {loop}; {plan}"
        )
        if "admission" in args.sections:
            rows = await admission(redis_url, args.calls)
            table("1. uncontended admission", ("what", "per call", "note"), rows)
        header = ("limiter", "delivered", "rate", "of 30/s", "windows over")
        if "precision" in args.sections:
            table("2. precision at Telegram's limits", header, await precision(args, redis_url))
        if "shared" in args.sections:
            table("3. shared Redis budget", header, [await shared(args, redis_url)])
        if "memory" in args.sections:
            rows = await memory(args.keys, redis_url)
            table("4. memory", ("what", "memory", "keys"), rows)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--calls", type=int, default=20000, help="admissions timed per variant")
    parser.add_argument("--keys", type=int, default=100_000, help="distinct chats for memory")
    parser.add_argument(
        "--min-times",
        type=float,
        nargs="+",
        default=[0.035, 0.030],
        help="telegram global_min_time values to run (the last one is used for section 3)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["admission", "precision", "shared", "memory"],
        choices=["admission", "precision", "shared", "memory"],
    )
    parser.add_argument(
        "--guard", type=float, default=0.0, help="seconds (default: 8 ms alone, 25 ms on Redis)"
    )
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the pyrate-limiter and aiolimiter runs",
    )
    parser.add_argument("--order", choices=["broadcast", "chat-major"], default="broadcast")
    parser.add_argument("--quick", action="store_true", help="600 messages, 200 chats, 20k keys")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the event loop (default: uvloop, the worker's)",
    )
    args = parser.parse_args()
    if args.quick:
        args.messages, args.chats, args.keys, args.calls = 600, 200, 20_000, 5000
    return args


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--server":
        asyncio.run(serve_counter())
    elif len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, redis_url, plan, min_time, guard = sys.argv[2:7]
        asyncio.run(worker(url, redis_url, json.loads(plan), float(min_time), float(guard)))
    else:
        options = parse()
        (uvloop.run if options.loop == "uvloop" else asyncio.run)(main(options))
