"""Breaker state shared through a real Redis: replicas agree, one probes, Redis down fails open."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from khronos_cli.config import BreakerSettings
from khronos_cli.errors import CircuitOpenError
from khronos_cli.resilience.breaker import BreakerEvent, CircuitBreaker
from khronos_cli.resilience.breaker.storage import RedisBreakerStorage
from tests.support import RedisServer, async_wait_for, through

ROOT = Path(__file__).resolve().parents[2]

REPLICA = """
import asyncio, sys
from khronos_cli.config import BreakerSettings
from khronos_cli.errors import CircuitOpenError
from khronos_cli.resilience.breaker import CircuitBreaker
from khronos_cli.resilience.breaker.storage import RedisBreakerStorage

async def until(condition):
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.005)

async def main(url):
    loop = asyncio.get_running_loop()
    readline = lambda: loop.run_in_executor(None, sys.stdin.readline)
    storage = RedisBreakerStorage.from_url(url, poll_interval=0.5)
    settings = BreakerSettings("shared", timeout=30, half_open_max_wait=30, reset_timeout=0.3)
    breaker = CircuitBreaker(settings, storage=storage)
    await breaker.startup()
    print("ready", breaker.state, flush=True)
    await until(lambda: breaker.state == "open")
    print("seen", breaker.state, flush=True)
    await readline()
    # A trial is due, or the other replica already took the probe (half-open, lease held).
    await until(lambda: breaker.state != "open" or breaker.snapshot()["next_trial_in"] == 0)
    finish = asyncio.Event()
    async def trial():
        print("probing", flush=True)
        await finish.wait()
    waiter = asyncio.ensure_future(readline())
    waiter.add_done_callback(lambda _: finish.set())
    try:
        async with breaker:
            await trial()
    except CircuitOpenError:
        print("rejected", flush=True)
    await waiter
    await until(lambda: breaker.state == "closed")
    print("done", breaker.state, flush=True)
    await breaker.aclose()
    await storage.aclose()

asyncio.run(main(sys.argv[1]))
"""


async def ask(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
    assert line, "the replica exited early"
    return line.decode().strip()


def tell(process: asyncio.subprocess.Process, line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line.encode() + b"\n")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    connection = redis.asyncio.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


def settings(**overrides: Any) -> BreakerSettings:
    return BreakerSettings("shared", **{"volume_threshold": 1, **overrides})


async def boom() -> None:
    raise ValueError("boom")


async def ok() -> str:
    return "ok"


async def test_two_processes_see_one_open_state_and_only_one_probes(redis_url: str) -> None:
    """Two replica processes see one open state; in half-open exactly one of them probes."""
    replicas = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            REPLICA,
            redis_url,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    storage = RedisBreakerStorage.from_url(redis_url)
    try:
        assert [await ask(p) for p in replicas] == ["ready closed"] * 2
        assert await storage.trip("shared", 0.3, "tripped by the test") is not None
        assert [await ask(p) for p in replicas] == ["seen open"] * 2
        for process in replicas:
            tell(process, "go")
        assert sorted([await ask(p) for p in replicas]) == ["probing", "rejected"]
        for process in replicas:
            tell(process, "finish")
        assert [await ask(p) for p in replicas] == ["done closed"] * 2
        assert [await asyncio.wait_for(p.wait(), 20) for p in replicas] == [0, 0]
    finally:
        await storage.aclose()
        for process in replicas:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_the_cached_closed_path_makes_no_round_trip(tmp_path: Path) -> None:
    """Closed calls and open rejections are decided from the local cache: zero Redis commands."""
    # A server of its own: the session's may still hear from an earlier test's replicas.
    server = RedisServer(shutil.which("redis-server") or "/usr/bin/redis-server", tmp_path)
    server.start()
    client = redis.asyncio.Redis.from_url(server.url)

    async def processed() -> int:
        return int((await client.info("stats"))["total_commands_processed"])

    storage = RedisBreakerStorage.from_url(server.url, poll_interval=60)
    breaker = CircuitBreaker(settings(volume_threshold=1000, reset_timeout=60), storage=storage)
    await breaker.startup()

    async def quiet() -> bool:
        """The storage's listener has connected, subscribed and polled: nothing but our INFOs."""
        if not await client.pubsub_channels():
            return False
        deltas = []
        for _ in range(3):
            before = await processed()
            deltas.append(await processed() - before)
        return deltas == [1, 1, 1]

    try:
        await async_wait_for(quiet)  # its connection's handshake once landed inside a window
        baseline = 1  # the INFO command itself
        start = await processed()
        for _ in range(500):
            await through(breaker, ok)
        assert await processed() - start == baseline
        await breaker.force_open("drill")
        start = await processed()
        for _ in range(200):
            with pytest.raises(CircuitOpenError):
                await through(breaker, ok)
        assert await processed() - start == baseline
    finally:
        await breaker.aclose()
        await storage.aclose()
        await client.aclose()
        server.stop()


async def test_keys_carry_the_hash_tag_and_expire(redis_url: str, client: Any) -> None:
    """An open breaker is one hash at khronos:{bot}:breaker:<name> with an expiry."""
    storage = RedisBreakerStorage.from_url(redis_url)
    breaker = CircuitBreaker(settings(), storage=storage)
    try:
        with pytest.raises(ValueError):
            await through(breaker, boom)
        await breaker.aclose()
        key = "khronos:{bot}:breaker:shared"
        assert (await client.hgetall(key))[b"state"] == b"open"
        assert await client.pttl(key) > 0
    finally:
        await storage.aclose()


async def test_an_override_reaches_every_replica(redis_url: str) -> None:
    """Forcing a breaker open on one replica rejects on another; a reset closes both."""
    storages = [RedisBreakerStorage.from_url(redis_url) for _ in range(2)]
    one, two = (CircuitBreaker(settings(), storage=s) for s in storages)
    try:
        for breaker in (one, two):
            await breaker.startup()
        await one.force_open("drill", expires_in=60)
        await async_wait_for(lambda: two.state == "open")
        with pytest.raises(CircuitOpenError, match="drill"):
            await through(two, ok)
        await two.reset()
        await async_wait_for(lambda: one.state == "closed")
    finally:
        for breaker in (one, two):
            await breaker.aclose()
        for storage in storages:
            await storage.aclose()


async def test_redis_down_fails_open_with_an_event(
    redis_url: str, redis_server: RedisServer
) -> None:
    """With Redis gone the breaker keeps deciding locally and emits storage_error."""
    now = [1000.0]
    storage = RedisBreakerStorage.from_url(redis_url)
    breaker = CircuitBreaker(settings(reset_timeout=5), storage=storage, clock=lambda: now[0])
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append, "storage_error")
    redis_server.stop()
    try:
        with pytest.raises(ValueError):
            await through(breaker, boom)
        await async_wait_for(lambda: events)
        assert breaker.state == "open"
        now[0] += 5
        assert await through(breaker, ok) == "ok"  # the probe lease is unreachable: trial runs
        assert breaker.state == "closed"
        assert isinstance(events[0].error, Exception)
        redis_server.start()
        breaker.add_listener(events.append, "storage_ok")
        await breaker.reset()
        assert [e.kind for e in events][-1] == "storage_ok"
    finally:
        redis_server.start()
        await breaker.aclose()
        await storage.aclose()


async def test_a_dead_probers_lease_lapses_after_the_maximum_wait(redis_url: str) -> None:
    """If the replica holding the probe lease dies, another may probe once the lease lapses."""
    dead = RedisBreakerStorage.from_url(redis_url)
    storage = RedisBreakerStorage.from_url(redis_url)
    breaker = CircuitBreaker(settings(half_open_max_wait=0.2), storage=storage)
    try:
        await breaker.startup()
        await dead.trip("shared", 0.0, "tripped by a replica that then died")
        probe = await dead.probe("shared", lease=0.2)
        assert probe is not None and probe.granted
        await async_wait_for(lambda: breaker.state == "half-open")
        with pytest.raises(CircuitOpenError):
            await through(breaker, ok)
        await async_wait_for(lambda: breaker.snapshot()["next_trial_in"] == 0)
        assert await through(breaker, ok) == "ok"
        assert breaker.state == "closed"
    finally:
        await breaker.aclose()
        await storage.aclose()
        await dead.aclose()


async def test_every_change_gets_a_strictly_newer_version(redis_url: str) -> None:
    """Two changes in the same millisecond still get increasing versions, so no replica
    mistakes the second for old news (it once ignored a half-open that way)."""
    storage = RedisBreakerStorage.from_url(redis_url)
    try:
        versions = []
        for _ in range(50):
            tripped = await storage.trip("versions", 0.0, "drill")
            probed = await storage.probe("versions", lease=0.2)
            assert tripped is not None and probed is not None
            versions += [tripped.version, probed.version]
            await storage.reset("versions")
        assert all(b > a for a, b in itertools.pairwise(versions))
    finally:
        await storage.aclose()
