"""Acceptance on real Redis: Telegram's limits exactly, shared halts, keys that expire, and two
processes sharing one 30/s budget."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from khronos_cli.config import LIMITER_DEFAULTS, LimiterSettings, Rate
from khronos_cli.resilience.limiter.limiter import Limiter
from khronos_cli.resilience.redis_client import connect
from tests.support import Clock, async_wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the flushed session Redis, built as the worker builds its own."""
    client = connect(redis_url)
    assert isinstance(client, Redis)
    yield client
    await client.aclose()


def windows_over(times: list[float], limit: int, period: float) -> int:
    """How many sliding windows [t, t + period) starting at a start hold more than ``limit``."""
    times = sorted(times)
    return sum(1 for i in range(len(times) - limit) if times[i + limit] - times[i] < period)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_telegram_limits_hold_exactly(redis: Redis, backend: str) -> None:
    """1 msg/s per private chat and 20 msg/min per group hold exactly, no slower than allowed."""
    clock = Clock(1_000_000.0)
    client = redis if backend == "redis" else None
    limiter = Limiter(LIMITER_DEFAULTS["telegram"], redis=client, clock=clock)
    starts: dict[int, list[float]] = {7: [], -100: []}

    async def send(chat: int) -> None:
        starts[chat].append(clock() - 1_000_000.0)

    jobs = [asyncio.create_task(limiter.schedule(send, 7, key=7)) for _ in range(5)]
    jobs += [asyncio.create_task(limiter.schedule(send, -100, key=-100)) for _ in range(25)]
    for _ in range(280):  # 70 s in steps of 0.25 s
        await limiter.pump()
        await async_wait_for(lambda: limiter.snapshot()["running"] == 0)
        clock.advance(0.25)
    assert starts[7] == [0.0, 1.0, 2.0, 3.0, 4.0]
    group = starts[-100]
    assert windows_over(group, 20, 60.0) == 0
    assert len([t for t in group if t < 60.0]) == 20  # all 20 of the first minute were used
    assert len(group) == 24  # ... and the 21st came as soon as the minute allowed
    await limiter.aclose()
    await asyncio.gather(*jobs, return_exceptions=True)


async def test_halt_is_shared_and_never_released_early(redis: Redis) -> None:
    """A 429 halt pauses every replica until it ends; finishing jobs do not release it."""
    clock = Clock(1_000_000.0)
    settings = LimiterSettings("telegram", group_by="chat", max_concurrent=1)
    first = Limiter(settings, redis=redis, clock=clock)
    second = Limiter(settings, redis=redis, clock=clock)
    release = asyncio.Event()
    started: list[str] = []

    async def job(tag: str) -> None:
        started.append(tag)
        await release.wait()

    busy = asyncio.create_task(first.schedule(job, "busy", key=1))
    await async_wait_for(lambda: started == ["busy"])
    first.halt(5.0)
    first.halt(2.0)  # shorter overlapping halt: the longer one wins
    await async_wait_for(lambda: redis.exists("khronos:{bot}:limiter:telegram:halt"))
    waiting = [
        asyncio.create_task(first.schedule(job, "first", key=2)),
        asyncio.create_task(second.schedule(job, "second", key=3)),
    ]
    await async_wait_for(lambda: first.snapshot()["queued"] + second.snapshot()["queued"] == 2)
    release.set()
    await busy  # a finishing job does not lift the halt
    for _ in range(19):
        clock.advance(0.25)
        await first.pump()
        await second.pump()
    assert started == ["busy"]
    clock.advance(0.25)
    await first.pump()
    await second.pump()
    await asyncio.gather(*waiting)
    assert sorted(started) == ["busy", "first", "second"]
    await first.aclose()
    await second.aclose()


async def test_redis_keys_carry_the_bot_tag_and_expire(redis: Redis) -> None:
    """Per-chat state lives under khronos:{bot}:... and expires on its own."""
    limiter = Limiter(LIMITER_DEFAULTS["telegram"], redis=redis, bot="4242")

    async def send() -> None:
        return None

    await limiter.schedule(send, key=123)
    await limiter.schedule(send, key=-55)
    keys = sorted(k.decode() for k in await redis.keys("*"))
    assert keys == [
        "khronos:{4242}:limiter:telegram:gcra:key:-55",
        "khronos:{4242}:limiter:telegram:gcra:key:123",
        "khronos:{4242}:limiter:telegram:global",
        "khronos:{4242}:limiter:telegram:last",
    ]
    ttls = [await redis.pttl(key) for key in keys]
    assert all(0 < ttl <= 6_000 for ttl in ttls)  # 2 emission intervals at most
    await limiter.aclose()


async def test_the_global_window_drops_the_starts_that_left_it(redis: Redis) -> None:
    """Starts older than the window are trimmed every few decisions, never all kept."""
    clock = Clock(1_000_000.0)
    limiter = Limiter(
        LimiterSettings("bench", global_rates=(Rate(1000, 1.0),)), redis=redis, clock=clock
    )

    async def job() -> None:
        return None

    for _ in range(100):
        await limiter.schedule(job)
    clock.advance(2.0)
    for _ in range(40):
        await limiter.schedule(job)
    assert await redis.zcard("khronos:{bot}:limiter:bench:global") == 40
    await limiter.aclose()


async def test_the_global_window_outlives_every_start_in_it(redis: Redis) -> None:
    """After every admitted start the window expires no sooner than that start leaves it."""
    clock = Clock(1_000_000.0)
    settings = LimiterSettings("sparse", global_rates=(Rate(1000, 1.0),))
    limiter = Limiter(settings, redis=redis, clock=clock)

    async def job() -> None:
        return None

    window = "khronos:{bot}:limiter:sparse:global"
    for _ in range(12):  # fewer than the 16 decisions of a counted upkeep
        await limiter.schedule(job)
        assert await redis.pttl(window) > 1900  # twice the window, pushed back just now
        await redis.pexpire(window, 1500)  # as if 0.5 s had passed since
        clock.advance(0.7)  # over a quarter of the expiry later
    await limiter.aclose()


_WORKER = """
import asyncio, json, sys, time
from redis.asyncio import Redis
from khronos_cli.config import LimiterSettings, Rate
from khronos_cli.resilience.limiter.limiter import Limiter

async def main(url, count):
    client = Redis.from_url(url)
    settings = LimiterSettings("bulk", group_by="chat", global_rates=(Rate(30, 1.0),))
    limiter = Limiter(settings, redis=client, guard=0.01)
    starts = []
    async def send():
        starts.append(time.time())
    while await client.get("go") is None:
        await asyncio.sleep(0.005)
    await asyncio.gather(*(limiter.schedule(send, key=n) for n in range(count)))
    await limiter.aclose()
    await client.aclose()
    print(json.dumps(starts))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_two_processes_share_one_budget(redis: Redis, redis_url: str) -> None:
    """Two processes on one Redis never exceed a shared 30/s in any 1 s window of their starts.

    The 10 ms guard covers the time from a decision's timestamp to the job's start (a round trip
    and a task switch on a busy machine), which the limiter cannot make zero.
    """
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            redis_url,
            "40",
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    await redis.set("go", 1)
    outputs = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    times = [t for out, _ in outputs for t in json.loads(out)]
    assert len(times) == 80
    assert windows_over(times, 30, 1.0) == 0
    assert windows_over(times, 29, 1.0) > 0  # the budget was actually reached, not just missed


async def test_global_spacing_and_key_halts_are_shared(redis: Redis) -> None:
    """global_min_time holds between replicas, and a chat's halt pauses that chat everywhere."""
    clock = Clock(1_000_000.0)
    settings = LimiterSettings("telegram", group_by="chat", global_min_time=1.0)
    first = Limiter(settings, redis=redis, clock=clock)
    second = Limiter(settings, redis=redis, clock=clock)
    started: list[str] = []

    async def job(tag: str) -> None:
        started.append(tag)

    await first.schedule(job, "first", key=1)
    first.halt(10.0, scope=3)
    await async_wait_for(lambda: redis.exists("khronos:{bot}:limiter:telegram:halt:key:3"))
    spaced = asyncio.create_task(second.schedule(job, "spaced", key=2))
    halted = asyncio.create_task(second.schedule(job, "halted", key=3))
    await async_wait_for(lambda: second.snapshot()["queued"] == 2)
    await second.pump()
    assert started == ["first"]  # 1 s has not passed since the other replica's start
    clock.advance(1.0)
    await second.pump()
    await spaced
    assert started == ["first", "spaced"]
    clock.advance(8.9)
    await second.pump()
    assert not halted.done()
    clock.advance(0.2)
    await second.pump()
    await halted
    await first.aclose()
    await second.aclose()
