"""The limiter's lifecycle: stopping (drain or hand back), cancelled callers, idle eviction."""

from __future__ import annotations

import asyncio

import pytest

from khronos_cli.config import Rate
from khronos_cli.errors import LimiterStoppedError
from tests.resilience.helpers import Factory, Gate
from tests.support import Clock, async_wait_for


async def test_stop_hands_back_queued_jobs(memory: Factory) -> None:
    """stop(drop_waiting=True) refuses new jobs, hands back the queue and waits for running ones."""
    limiter = memory(group_by="chat", max_concurrent=1)
    gate = Gate()
    running = asyncio.create_task(limiter.schedule(gate.job, "running", key=1))
    queued = [asyncio.create_task(limiter.schedule(gate.job, n, key=1)) for n in range(2)]
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 2)
    stopping = asyncio.create_task(limiter.stop(drop_waiting=True))
    await async_wait_for(lambda: limiter.snapshot()["stopping"])
    with pytest.raises(LimiterStoppedError):
        await limiter.schedule(gate.job, "late", key=2)
    for task in queued:
        with pytest.raises(LimiterStoppedError):
            await task
    assert not stopping.done()  # still waiting for the running job
    gate.opened.set()
    handed = await stopping
    assert [job.args for job in handed] == [(0,), (1,)] and await running == "running"


async def test_stop_drains_the_queue(memory: Factory) -> None:
    """stop() without drop_waiting runs what is queued before it returns."""
    clock = Clock(1_000_000.0)
    limiter = memory(min_time=1.0, clock=clock)
    done: list[int] = []

    async def job(n: int) -> None:
        done.append(n)

    tasks = [asyncio.create_task(limiter.schedule(job, n)) for n in range(3)]
    await async_wait_for(lambda: done == [0])
    stopping = asyncio.create_task(limiter.stop())
    for _ in range(2):
        clock.advance(1.0)
        await limiter.pump()
    assert await stopping == [] and done == [0, 1, 2]
    await asyncio.gather(*tasks)


async def test_cancelled_caller_leaves_the_queue(memory: Factory) -> None:
    """A caller cancelled while queued takes its job out of the queue."""
    limiter = memory(max_concurrent=1)
    gate = Gate()
    busy = asyncio.create_task(limiter.schedule(gate.job, "busy"))
    waiting = asyncio.create_task(limiter.schedule(gate.job, "never"))
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 1)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert limiter.snapshot()["queued"] == 0
    gate.opened.set()
    await busy
    assert gate.started == ["busy"]


async def test_idle_keys_are_evicted(memory: Factory) -> None:
    """10,000 distinct keys go away once idle, so memory does not grow with keys seen."""
    clock = Clock(1_000_000.0)
    limiter = memory(group_by="chat", rates=(Rate(1, 0.01),), idle_timeout=0.02, clock=clock)

    async def job() -> None:
        return None

    await asyncio.gather(*(limiter.schedule(job, key=n) for n in range(10_000)))
    assert limiter.snapshot()["keys"] == 10_000
    clock.advance(0.05)
    await async_wait_for(lambda: limiter.snapshot()["keys"] == 0)  # the sweeper's own timer


async def test_eviction_waits_for_the_rate_to_drain(memory: Factory) -> None:
    """A key is not evicted while its rate state still binds (eviction never resets a rate)."""
    clock = Clock(1_000_000.0)
    limiter = memory(group_by="chat", rates=(Rate(1, 5.0),), idle_timeout=0.1, clock=clock)

    async def job() -> None:
        return None

    await limiter.schedule(job, key=1)
    clock.advance(1.0)
    await limiter.pump()
    assert limiter.snapshot()["keys"] == 1
    clock.advance(4.1)
    await limiter.pump()
    assert limiter.snapshot()["keys"] == 0
