"""The breaker's state machine: tripping, half-open trials, overrides, health checks, snapshot."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from khronos_cli.config import BreakerSettings
from khronos_cli.errors import CircuitOpenError
from khronos_cli.resilience.breaker import BreakerEvent, CircuitBreaker
from tests.support import Clock, async_wait_for, through


def make(clock: Clock, **overrides: Any) -> CircuitBreaker:
    options = {
        k: overrides.pop(k) for k in list(overrides) if k not in BreakerSettings.__annotations__
    }
    return CircuitBreaker(BreakerSettings("dep", **overrides), clock=clock, **options)


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise ValueError("boom")


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ValueError):
            await through(breaker, boom)


async def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        assert await through(breaker, ok) == "ok"


async def tripped(clock: Clock, **overrides: Any) -> CircuitBreaker:
    breaker = make(clock, volume_threshold=1, **overrides)
    await fail(breaker)
    assert breaker.state == "open"
    return breaker


async def test_nothing_trips_below_the_minimum_volume() -> None:
    """Below volume_threshold even 100 % errors keep the breaker closed (opossum #217)."""
    breaker = make(Clock(), volume_threshold=10)
    await fail(breaker, 9)
    assert breaker.state == "closed"


async def test_it_trips_at_the_threshold_once_the_volume_is_reached() -> None:
    """With 10 calls in the window, 50 % errors trip a 50 % breaker; 40 % does not."""
    breaker = make(Clock(), volume_threshold=10)
    await succeed(breaker, 6)
    await fail(breaker, 4)
    assert breaker.state == "closed"
    breaker2 = make(Clock(), volume_threshold=10)
    await succeed(breaker2, 5)
    await fail(breaker2, 5)
    assert breaker2.state == "open"
    assert breaker2.snapshot()["stats"]["error_percentage"] == 50.0


async def test_old_failures_leave_the_window() -> None:
    """Failures older than the rolling window no longer count toward tripping."""
    clock = Clock()
    breaker = make(clock, volume_threshold=4)
    await fail(breaker, 3)
    clock.now += 11
    await succeed(breaker, 3)
    await fail(breaker)
    assert breaker.state == "closed"


async def test_rejected_calls_are_not_in_the_denominator() -> None:
    """Short-circuited calls count as rejects but never enter the error percentage."""
    breaker = await tripped(Clock())
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            await through(breaker, ok)
    stats = breaker.snapshot()["stats"]
    assert (stats["rejects"], stats["window_calls"], stats["error_percentage"]) == (5, 1, 100.0)


async def test_the_consecutive_policy_is_pybreakers_rule() -> None:
    """With policy=consecutive, fail_max failures in a row trip; a success resets the run."""
    breaker = make(Clock(), policy="consecutive", fail_max=3, volume_threshold=1000)
    await fail(breaker, 2)
    await succeed(breaker)
    await fail(breaker, 2)
    assert breaker.state == "closed"
    await fail(breaker)
    assert breaker.state == "open"


async def test_open_rejects_until_the_reset_timeout_then_one_trial_closes() -> None:
    """Open rejects with the time left; after reset_timeout a successful trial closes."""
    clock = Clock()
    breaker = await tripped(clock, reset_timeout=30)
    clock.now += 10
    with pytest.raises(CircuitOpenError) as caught:
        await through(breaker, ok)
    assert caught.value.retry_in == pytest.approx(20)
    clock.now += 20
    await succeed(breaker)
    assert breaker.state == "closed"


async def test_a_failed_trial_reopens_for_another_reset_timeout() -> None:
    """A half-open trial that fails opens the breaker again, with a fresh reset timeout."""
    clock = Clock()
    breaker = await tripped(clock, reset_timeout=30)
    clock.now += 30
    await fail(breaker)
    assert breaker.state == "open"
    assert breaker.snapshot()["next_trial_in"] == pytest.approx(30)


async def test_the_window_resets_on_close() -> None:
    """After closing, one old-window failure cannot re-trip the breaker at once (opossum bug)."""
    clock = Clock()
    breaker = make(clock, volume_threshold=2, reset_timeout=5)
    await fail(breaker, 2)
    clock.now += 5
    await succeed(breaker)
    assert breaker.snapshot()["stats"]["window_calls"] == 0
    await fail(breaker)
    assert breaker.state == "closed"


@pytest.mark.parametrize("permits", [1, 3])
async def test_half_open_admits_exactly_n_of_50_concurrent_callers(permits: int) -> None:
    """With 50 concurrent callers in half-open exactly ``half_open_max_calls`` go through."""
    clock, gate = Clock(), asyncio.Event()
    breaker = await tripped(clock, half_open_max_calls=permits)
    clock.now += 30

    async def trial() -> str:
        await gate.wait()
        return "trial"

    tasks = [asyncio.create_task(through(breaker, trial)) for _ in range(50)]
    await async_wait_for(lambda: sum(t.done() for t in tasks) == 50 - permits)
    assert breaker.state == "half-open"
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("trial") == permits
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 50 - permits
    assert breaker.state == "closed"


async def test_a_hung_trial_reopens_after_the_maximum_wait() -> None:
    """A trial still running after half_open_max_wait re-opens; its late success changes nothing."""
    clock, gate = Clock(), asyncio.Event()
    breaker = await tripped(clock, timeout=30, half_open_max_wait=0.05)
    clock.now += 30
    task = asyncio.create_task(through(breaker, gate.wait))
    await async_wait_for(lambda: breaker.snapshot()["stats"]["in_flight"] == 1)
    assert breaker.state == "half-open"
    await async_wait_for(lambda: breaker.state == "open", timeout=5)
    assert breaker.snapshot()["reason"] == "half-open trial exceeded the maximum wait"
    gate.set()
    await task
    assert breaker.state == "open"


async def test_a_cancelled_trial_releases_its_permit() -> None:
    """Cancelling the trial neither opens nor closes, and the next caller becomes the trial."""
    clock = Clock()
    breaker = await tripped(clock)
    clock.now += 30
    task = asyncio.create_task(through(breaker, asyncio.Event().wait))
    await async_wait_for(lambda: breaker.snapshot()["stats"]["in_flight"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state == "half-open"
    await succeed(breaker)
    assert breaker.state == "closed"


async def test_force_open_rejects_with_its_reason_until_it_expires() -> None:
    """A forced-open breaker rejects naming the reason, shows forced, and expires into a trial."""
    clock = Clock()
    breaker = make(clock)
    await breaker.force_open("drill", expires_in=60)
    with pytest.raises(CircuitOpenError, match="forced open \\(drill\\)"):
        await through(breaker, ok)
    forced = breaker.snapshot()["forced"]
    assert (forced["state"], forced["reason"], forced["expires_in"]) == ("open", "drill", 60)
    clock.now += 61
    await succeed(breaker)
    assert breaker.state == "closed"
    assert breaker.snapshot()["forced"] is None


async def test_force_closed_never_trips_until_it_expires() -> None:
    """Forced closed lets failures through without tripping; after expiry the rules apply."""
    clock = Clock()
    breaker = make(clock, volume_threshold=1)
    await breaker.force_closed("upstream flaky but needed", expires_in=10)
    await fail(breaker, 5)
    assert breaker.state == "closed"
    clock.now += 11
    await fail(breaker)
    assert breaker.state == "open"


async def test_reset_ends_an_override_and_closes() -> None:
    """reset() clears a forced-open state and a hold, closing the breaker."""
    breaker = make(Clock())
    await breaker.force_open("drill")
    breaker.hold_open(600)
    await breaker.reset()
    assert (breaker.state, breaker.snapshot()["forced"]) == ("closed", None)
    await succeed(breaker)


async def test_a_failing_health_check_opens_and_a_passing_one_half_opens() -> None:
    """A failing health check opens (with an event); a passing one allows a trial early."""
    clock, healthy = Clock(), [False]
    events: list[BreakerEvent] = []

    async def check() -> bool:
        return healthy[0]

    breaker = make(clock, health_check=check, reset_timeout=300)
    breaker.add_listener(events.append, "health_check_failed", "open", "half_open")
    assert await breaker.check_health() is False
    assert breaker.state == "open"
    healthy[0] = True
    assert await breaker.check_health() is True
    assert breaker.state == "half-open"
    await succeed(breaker)
    assert breaker.state == "closed"
    assert [e.kind for e in events] == ["health_check_failed", "open", "half_open"]


async def test_a_hanging_health_check_opens_without_waiting_for_a_long_call_timeout() -> None:
    """A probe that never answers fails after the health check's own short timeout, not after
    the breaker's call timeout (an hour here: an LLM answer may take long, a ping may not)."""
    clock = Clock()

    async def hang() -> None:
        await asyncio.Event().wait()

    breaker = make(clock, health_check=hang, timeout=3600)
    assert await breaker.check_health() is False
    assert breaker.state == "open"


async def test_the_health_check_runs_periodically() -> None:
    """startup() runs the health check every interval until aclose()."""
    calls: list[int] = []

    async def check() -> None:
        calls.append(1)
        raise ConnectionError("db down")

    breaker = make(Clock(), health_check=check, health_check_interval=0.01)
    await breaker.startup()
    await async_wait_for(lambda: len(calls) >= 2 and breaker.state == "open")
    await breaker.aclose()


async def test_the_snapshot_is_json_with_the_contract_keys() -> None:
    """snapshot() is JSON-ready with state, stats and latency percentiles."""
    clock = Clock()
    breaker = await tripped(clock)
    data = json.loads(json.dumps(breaker.snapshot()))
    assert data["state"] == "open"
    assert set(data["stats"]) >= {
        "fires",
        "successes",
        "failures",
        "timeouts",
        "rejects",
        "fallbacks",
        "error_percentage",
        "latency_ms",
    }
    assert set(data["stats"]["latency_ms"]) == {"mean", "p50", "p90", "p99"}
    assert data["next_trial_in"] == 30
    assert data["opened_at"] > 1e9
    assert data["settings"]["half_open_max_wait"] == 11.0
