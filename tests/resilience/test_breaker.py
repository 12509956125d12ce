"""The breaker's call path: awaiting, timeouts, cancellation, classification, events."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from khronos_cli.config import BreakerSettings
from khronos_cli.errors import CallTimeoutError, CircuitOpenError, UpstreamError
from khronos_cli.resilience.breaker import BreakerEvent, CircuitBreaker
from tests.support import Clock, async_wait_for, through


def make(**overrides: Any) -> CircuitBreaker:
    options = {
        k: overrides.pop(k) for k in list(overrides) if k not in BreakerSettings.__annotations__
    }
    return CircuitBreaker(BreakerSettings("dep", **overrides), **options)


def stats(breaker: CircuitBreaker) -> dict[str, Any]:
    return dict(breaker.snapshot()["stats"])


async def ok(value: object = "ok") -> object:
    return value


async def boom() -> None:
    raise ValueError("boom")


async def test_async_with_records_a_success() -> None:
    """A block that completes through ``async with`` counts one fire and one success."""
    breaker = make()
    async with breaker:
        await ok()
    assert (stats(breaker)["fires"], stats(breaker)["successes"]) == (1, 1)


async def test_success_is_recorded_only_once_the_coroutine_finished() -> None:
    """While the awaited work is pending nothing is recorded yet (pybreaker #7)."""
    breaker, gate = make(), asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    task = asyncio.create_task(through(breaker, work))
    await async_wait_for(lambda: stats(breaker)["in_flight"] == 1)
    assert stats(breaker)["successes"] == 0
    gate.set()
    assert await task == "done"
    assert stats(breaker)["successes"] == 1


async def test_concurrent_calls_run_together() -> None:
    """No lock is held across the awaited call: 20 slow calls are all in flight at once."""
    breaker, gate = make(), asyncio.Event()
    tasks = [asyncio.create_task(through(breaker, gate.wait)) for _ in range(20)]
    await async_wait_for(lambda: stats(breaker)["in_flight"] == 20)
    gate.set()
    await asyncio.gather(*tasks)
    assert stats(breaker)["successes"] == 20


async def test_a_timeout_cancels_the_work_and_counts_as_timeout_and_failure() -> None:
    """A call past ``timeout`` is cancelled and counts once as a timeout, once as a failure."""
    breaker, cancelled = make(timeout=0.02), asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(CallTimeoutError) as caught:
        await through(breaker, hang)
    assert cancelled.is_set()
    assert caught.value.breaker == "dep"
    assert (stats(breaker)["timeouts"], stats(breaker)["failures"]) == (1, 1)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_async_with_times_out_too() -> None:
    """The timeout applies to an ``async with`` block as well."""
    breaker = make(timeout=0.02)
    with pytest.raises(CallTimeoutError):
        async with breaker:
            await asyncio.Event().wait()
    assert stats(breaker)["timeouts"] == 1


async def test_one_watchdog_times_out_many_calls() -> None:
    """Many concurrent slow calls each time out once; fast ones around them do not."""
    breaker = make(timeout=0.03, volume_threshold=1000)
    slow = [asyncio.create_task(through(breaker, asyncio.sleep, 5)) for _ in range(30)]
    for _ in range(10):
        await through(breaker, ok)
    results = await asyncio.gather(*slow, return_exceptions=True)
    assert all(isinstance(r, CallTimeoutError) for r in results)
    assert (stats(breaker)["timeouts"], stats(breaker)["successes"]) == (30, 10)


async def test_an_outer_cancel_during_timeout_cleanup_is_not_swallowed() -> None:
    """When the caller is cancelled while the timed-out work cleans up, CancelledError wins."""
    breaker, cleaning = make(timeout=0.02), asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(through(breaker, slow_cleanup))
    await cleaning.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stats(breaker)["timeouts"] == 0


async def test_cancelling_100_in_flight_calls_changes_nothing() -> None:
    """Shutdown cancelling in-flight calls leaves the stats and the state as they were."""
    breaker = make(volume_threshold=5)
    for _ in range(3):
        await through(breaker, ok)
    tasks = [asyncio.create_task(through(breaker, asyncio.Event().wait)) for _ in range(100)]
    await async_wait_for(lambda: stats(breaker)["in_flight"] == 100)
    before = {k: v for k, v in stats(breaker).items() if k != "in_flight"}
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    after = stats(breaker)
    assert after.pop("in_flight") == 0
    assert after == before
    assert breaker.state == "closed"


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
async def test_interrupts_propagate_and_count_nothing(error: type[BaseException]) -> None:
    """KeyboardInterrupt and SystemExit pass through unchanged, neither success nor failure."""
    breaker = make()
    with pytest.raises(error):
        async with breaker:
            raise error()
    assert (stats(breaker)["successes"], stats(breaker)["failures"]) == (0, 0)


async def test_ignored_errors_count_as_nothing_and_still_propagate() -> None:
    """``ignore`` errors are neither success nor failure, and reach the caller unchanged."""
    breaker = make(ignore=lambda exc: isinstance(exc, IndexError))
    with pytest.raises(IndexError):
        async with breaker:
            raise IndexError("x")
    assert (stats(breaker)["successes"], stats(breaker)["failures"]) == (0, 0)
    assert stats(breaker)["window_calls"] == 0


async def test_an_error_with_retry_after_holds_the_breaker_open() -> None:
    """An UpstreamError carrying retry_after opens the breaker for that long."""
    clock = Clock()
    breaker = make(clock=clock)
    with pytest.raises(UpstreamError):
        async with breaker:
            raise UpstreamError("telegram-api", "too many requests", status=429, retry_after=45)
    assert breaker.snapshot()["next_trial_in"] == pytest.approx(45)


async def test_events_are_emitted_and_a_raising_listener_is_harmless() -> None:
    """Listeners see fire/success/failure/open/reject; one that raises breaks nothing."""
    kinds: list[str] = []
    breaker = make(volume_threshold=1)
    breaker.add_listener(lambda e: kinds.append(e.kind))
    breaker.add_listener(lambda e: 1 / 0)
    assert await through(breaker, ok) == "ok"
    with pytest.raises(ValueError):
        await through(breaker, boom)
    with pytest.raises(CircuitOpenError):
        await through(breaker, ok)
    assert kinds == ["fire", "success", "fire", "failure", "open", "fire", "reject"]


async def test_listeners_can_filter_and_be_async() -> None:
    """A listener for some kinds sees only those; an async listener is run as a task."""
    seen: list[BreakerEvent] = []

    async def listener(event: BreakerEvent) -> None:
        seen.append(event)

    breaker = make()
    breaker.add_listener(listener, "failure")
    with pytest.raises(ValueError):
        await through(breaker, boom)
    await through(breaker, ok)
    await async_wait_for(lambda: seen)
    assert [(e.kind, type(e.error), e.breaker) for e in seen] == [("failure", ValueError, "dep")]
    with pytest.raises(ValueError, match="unknown breaker events"):
        breaker.add_listener(listener, "explode")
    await breaker.aclose()


async def test_nested_use_in_one_task_settles_both_calls() -> None:
    """A call nested in ``async with`` of the same breaker records two calls, leaking nothing."""
    breaker = make()
    async with breaker:
        assert await through(breaker, ok) == "ok"
    assert (stats(breaker)["successes"], stats(breaker)["in_flight"]) == (2, 0)


async def test_a_task_through_a_breaker_is_freed_without_the_collector() -> None:
    """A task that entered and left a breaker (twice, nested) leaves no reference cycle."""
    outer, inner = make(), make()

    async def call() -> None:
        async with outer, inner:
            await asyncio.sleep(0)

    gc.disable()
    try:
        tasks = [asyncio.get_running_loop().create_task(call()) for _ in range(20)]
        for task in tasks:
            await task
        alive = [weakref.ref(task) for task in tasks]
        del tasks, task
        await asyncio.sleep(0)  # the loop lets go of the last wake-up
        assert [ref for ref in alive if ref() is not None] == []
    finally:
        gc.enable()
