"""The scheduler's semantics: order, concurrency, spacing, drops, expiration, retries, stop."""

from __future__ import annotations

import asyncio

import pytest

from khronos_cli.config import Rate
from khronos_cli.errors import JobDroppedError, JobExpiredError
from khronos_cli.resilience.limiter.stats import LimiterEvent
from tests.resilience.helpers import Factory, Gate
from tests.support import Clock, async_wait_for


async def test_fifo_within_a_key_and_priority_first(memory: Factory) -> None:
    """Within a key jobs start by priority (0 first), then in arrival order."""
    limiter = memory(max_concurrent=1)
    gate = Gate()
    first = asyncio.create_task(limiter.schedule(gate.job, "first"))
    await async_wait_for(lambda: gate.started == ["first"])
    tasks = [
        asyncio.create_task(limiter.schedule(gate.job, tag, priority=prio))
        for tag, prio in [("a5", 5), ("b5", 5), ("c1", 1), ("d9", 9), ("e5", 5)]
    ]
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 5)
    gate.opened.set()
    await asyncio.gather(first, *tasks)
    assert gate.started == ["first", "c1", "a5", "b5", "e5", "d9"]


async def test_weighted_concurrency_caps_running_jobs(memory: Factory) -> None:
    """A weight-2 job holds two of the max_concurrent slots."""
    limiter = memory(max_concurrent=3)
    gate = Gate()
    tasks = [asyncio.create_task(limiter.schedule(gate.job, "heavy", weight=2))]
    tasks += [asyncio.create_task(limiter.schedule(gate.job, n)) for n in range(3)]
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 2)
    assert gate.started == ["heavy", 0]
    assert limiter.snapshot()["executing"] == 2
    gate.opened.set()
    await asyncio.gather(*tasks)
    assert limiter.snapshot()["done"] == 4


async def test_min_time_spaces_starts(memory: Factory) -> None:
    """min_time holds starts apart, measured on the injected clock."""
    clock = Clock(1_000_000.0)
    limiter = memory(min_time=0.5, clock=clock)
    starts: list[float] = []

    async def job() -> None:
        starts.append(clock())

    tasks = [asyncio.create_task(limiter.schedule(job)) for _ in range(3)]
    await async_wait_for(lambda: len(starts) == 1)
    for _ in range(10):
        clock.advance(0.125)
        await limiter.pump()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert [round(t - starts[0], 3) for t in starts] == [0, 0.5, 1.0]


async def test_waiting_key_never_delays_another(make: Factory) -> None:
    """No head-of-line blocking: while chat 1 waits for its 1/s, chat 2 starts at once."""
    limiter = make(group_by="chat", rates=(Rate(1, 1.0),))
    order: list[str] = []

    async def job(tag: str) -> None:
        order.append(tag)

    await limiter.schedule(job, "chat1-a", key=1)
    blocked = asyncio.create_task(limiter.schedule(job, "chat1-b", key=1))
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 1)
    await limiter.schedule(job, "chat2-a", key=2)
    assert order == ["chat1-a", "chat2-a"]
    assert limiter.snapshot()["queued"] == 1  # chat 1's second is still waiting
    blocked.cancel()
    await asyncio.gather(blocked, return_exceptions=True)


@pytest.mark.parametrize(
    ("strategy", "dropped", "ran"),
    [
        ("reject", ["new"], ["old", "mid"]),
        ("drop-oldest", ["old"], ["mid", "new"]),
        ("drop-lowest", ["mid"], ["old", "new"]),
    ],
)
async def test_full_queue_drops_per_strategy(
    make: Factory, strategy: str, dropped: list[str], ran: list[str]
) -> None:
    """A full queue drops the newcomer, the oldest, or the least important, with a typed error."""
    limiter = make(group_by="user", max_concurrent=1, max_queued=2, strategy=strategy)
    gate = Gate()
    busy = asyncio.create_task(limiter.schedule(gate.job, "busy", key="u"))
    await async_wait_for(lambda: gate.started == ["busy"])
    jobs = {
        "old": asyncio.create_task(limiter.schedule(gate.job, "old", key="u", priority=3)),
        "mid": asyncio.create_task(limiter.schedule(gate.job, "mid", key="u", priority=8)),
    }
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 2)
    jobs["new"] = asyncio.create_task(limiter.schedule(gate.job, "new", key="u", priority=5))
    await async_wait_for(lambda: limiter.snapshot()["dropped"] == 1)
    gate.opened.set()
    await busy
    outcomes = await asyncio.gather(*jobs.values(), return_exceptions=True)
    results = dict(zip(jobs, outcomes, strict=True))
    errors = [name for name, r in results.items() if isinstance(r, JobDroppedError)]
    assert errors == dropped
    error = results[dropped[0]]
    assert isinstance(error, JobDroppedError)
    assert error.key == "u" and error.limiter == "test" and error.retry_after > 0
    assert sorted(gate.started[1:]) == sorted(ran)


async def test_retry_after_grows_with_the_queue(memory: Factory) -> None:
    """The drop's Retry-After is computed from the queue ahead and the key's rate."""
    clock = Clock(1_000_000.0)
    limiter = memory(group_by="chat", rates=(Rate(1, 2.0),), max_queued=3, clock=clock)

    async def job() -> None:
        return None

    await limiter.schedule(job, key=1)
    waiting = [asyncio.create_task(limiter.schedule(job, key=1)) for _ in range(3)]
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 3)
    await limiter.pump()
    with pytest.raises(JobDroppedError) as caught:
        await limiter.schedule(job, key=1)
    assert caught.value.retry_after == pytest.approx(2.0 + 3 * 2.0, abs=0.01)
    await limiter.stop(drop_waiting=True)
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_expired_job_is_cancelled(make: Factory) -> None:
    """A job past its expiration has its coroutine cancelled and fails with JobExpiredError."""
    limiter = make(max_concurrent=1)
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(JobExpiredError):
        await limiter.schedule(hangs, expiration=0.02)
    assert cancelled.is_set()
    snapshot = limiter.snapshot()
    assert snapshot["failed"] == 1 and snapshot["executing"] == 0
    assert await limiter.schedule(asyncio.sleep, 0, "slot freed") == "slot freed"


async def test_retries_rerun_a_failing_job(memory: Factory) -> None:
    """A job that asks for retries is run again after a failure, with a retry event."""
    limiter = memory()
    events: list[LimiterEvent] = []
    limiter.on("retry", events.append)
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    assert await limiter.schedule(flaky, retries=2) == "ok"
    assert len(events) == 2 and isinstance(events[0].error, ConnectionError)
    with pytest.raises(ConnectionError):
        attempts.clear()
        await limiter.schedule(flaky, retries=1)
    assert limiter.snapshot()["retried"] == 3 and limiter.snapshot()["failed"] == 1


async def test_events_and_counts(memory: Factory) -> None:
    """Events fire per state change; counts and the rate history follow the jobs."""
    limiter = memory(max_concurrent=1)
    seen: list[str] = []
    for event in ("queued", "executing", "done", "failed", "idle"):
        limiter.on(event, lambda e: seen.append(e.event))
    limiter.on("done", lambda e: 1 / 0)  # a broken listener changes nothing
    gate = Gate()
    tasks = [asyncio.create_task(limiter.schedule(gate.job, n)) for n in range(2)]
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 1)
    snapshot = limiter.snapshot()
    assert (snapshot["executing"], snapshot["queued"], snapshot["received"]) == (1, 1, 2)
    gate.opened.set()
    await asyncio.gather(*tasks)
    assert seen == ["executing", "queued", "done", "executing", "done", "idle"]
    snapshot = limiter.snapshot()
    assert {"executing", "queued", "done", "dropped", "rate", "history", "keys"} <= set(snapshot)
    assert snapshot["done"] == 2 and len(snapshot["history"]) == 60


async def test_invalid_jobs_are_refused(memory: Factory) -> None:
    """A priority outside 0-9 or a weight that can never fit is a programming error."""
    limiter = memory(max_concurrent=2)
    with pytest.raises(ValueError, match="priority"):
        await limiter.schedule(asyncio.sleep, 0, priority=10)
    with pytest.raises(ValueError, match="weight"):
        await limiter.schedule(asyncio.sleep, 0, weight=3)


async def test_ungrouped_limiter_ignores_keys(memory: Factory) -> None:
    """Without group_by the plain fields bind the limiter as a whole, whatever the key."""
    limiter = memory(max_concurrent=2)
    gate = Gate()
    tasks = [asyncio.create_task(limiter.schedule(gate.job, n, key=n)) for n in range(3)]
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 1)
    assert gate.started == [0, 1] and limiter.snapshot()["keys"] == 1
    gate.opened.set()
    await asyncio.gather(*tasks)


async def test_drop_lowest_keeps_the_queue_when_the_newcomer_matters_less(
    memory: Factory,
) -> None:
    """drop-lowest only drops a queued job less important than the newcomer."""
    limiter = memory(max_concurrent=1, max_queued=1, strategy="drop-lowest")
    gate = Gate()
    busy = asyncio.create_task(limiter.schedule(gate.job, "busy"))
    kept = asyncio.create_task(limiter.schedule(gate.job, "kept", priority=4))
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 1)
    with pytest.raises(JobDroppedError):
        await limiter.schedule(gate.job, "late", priority=4)
    gate.opened.set()
    assert await asyncio.gather(busy, kept) == ["busy", "kept"]


async def test_room_reports_a_full_queue_before_taking_work(memory: Factory) -> None:
    """room() is None while a job would be queued, and the queue's Retry-After once full."""
    limiter = memory(group_by="chat", max_concurrent=1, max_queued=1)
    gate = Gate()
    busy = asyncio.create_task(limiter.schedule(gate.job, "busy", key=5))
    queued = asyncio.create_task(limiter.schedule(gate.job, "queued", key=5))
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 1)
    assert limiter.room(6) is None
    wait = limiter.room(5)
    assert wait is not None and wait > 0
    gate.opened.set()
    await asyncio.gather(busy, queued)
    assert limiter.room(5) is None


async def test_a_refusal_charges_no_level(make: Factory) -> None:
    """When the global rate refuses, the key's rate is not charged (all or nothing)."""
    clock = Clock(1_000_000.0)
    limiter = make(
        group_by="chat", rates=(Rate(1, 100.0),), global_rates=(Rate(1, 1.0),), clock=clock
    )
    started: list[int] = []

    async def job(chat: int) -> None:
        started.append(chat)

    await limiter.schedule(job, 1, key=1)
    second = asyncio.create_task(limiter.schedule(job, 2, key=2))
    await async_wait_for(lambda: limiter.snapshot()["queued"] == 1)
    await limiter.pump()
    assert started == [1]
    clock.advance(1.01)
    await limiter.pump()
    await second  # chat 2 was not charged by the refused attempt, so it goes after 1 s
    assert started == [1, 2]
