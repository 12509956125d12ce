"""Injected outages against a real aiohttp server on 127.0.0.1, through a real httpx client."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from khronos_cli.upstream.faults import (
    MAX_DURATION,
    FaultInjector,
    InjectedFaultError,
    OutageError,
    OutageEvent,
)
from khronos_cli.upstream.transport import FaultTransport
from tests.support import Clock, async_wait_for


@dataclass
class Upstream:
    """A real HTTP server that counts the requests that reached it and when."""

    url: str = ""
    arrivals: list[float] = field(default_factory=list)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """An aiohttp server on a free loopback port answering ``GET /ok``."""
    state = Upstream()

    async def ok(request: web.Request) -> web.Response:
        state.arrivals.append(asyncio.get_running_loop().time())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/ok"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
def injector() -> FaultInjector:
    """A fault injector with a seeded random source."""
    return FaultInjector(rng=random.Random(7))


def client_for(injector: FaultInjector, dependency: str = "anthropic-api") -> httpx.AsyncClient:
    transport = FaultTransport(httpx.AsyncHTTPTransport(), injector, dependency)
    return httpx.AsyncClient(transport=transport, timeout=5.0)


async def test_no_outage_forwards_unchanged(upstream: Upstream, injector: FaultInjector) -> None:
    """With no outage active, requests reach the real server and come back untouched."""
    async with client_for(injector) as client:
        response = await client.get(upstream.url)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert len(upstream.arrivals) == 1


async def test_outage_on_another_dependency_does_not_leak(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """An outage on one dependency leaves the transports of the others alone."""
    injector.start("telegram-api", "down")
    async with client_for(injector, "anthropic-api") as client:
        assert (await client.get(upstream.url)).status_code == 200


async def test_down_raises_connect_error(upstream: Upstream, injector: FaultInjector) -> None:
    """``down`` raises httpx.ConnectError and never touches the network."""
    injector.start("anthropic-api", "down")
    async with client_for(injector) as client:
        with pytest.raises(httpx.ConnectError, match="injected"):
            await client.get(upstream.url)
    assert upstream.arrivals == []
    assert injector.active()[0].hits == 1


async def test_timeout_waits_for_the_request_read_timeout(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """``timeout`` raises httpx.ReadTimeout once the request's own read timeout has passed."""
    injector.start("anthropic-api", "timeout")
    loop = asyncio.get_running_loop()
    async with client_for(injector) as client:
        started = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await client.get(upstream.url, timeout=httpx.Timeout(5.0, read=0.03))
        waited = loop.time() - started
    assert waited >= 0.029  # causal lower bound: it waited for the timeout, it did not fail fast
    assert upstream.arrivals == []


async def test_timeout_without_a_timeout_hangs_until_cancelled(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """With no timeout on the request, ``timeout`` holds the call until it is cancelled."""
    injector.start("anthropic-api", "timeout")
    async with client_for(injector) as client:
        task = asyncio.create_task(client.get(upstream.url, timeout=None))
        await async_wait_for(lambda: injector.active()[0].held == 1)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert injector.active()[0].held == 0
    assert upstream.arrivals == []


async def test_hung_calls_are_released_when_the_outage_ends(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """A call hanging in a ``timeout`` outage fails with ReadTimeout when the outage stops."""
    injector.start("anthropic-api", "timeout")
    async with client_for(injector) as client:
        task = asyncio.create_task(client.get(upstream.url, timeout=None))
        await async_wait_for(lambda: injector.active()[0].held == 1)
        injector.stop("anthropic-api")
        with pytest.raises(httpx.ReadTimeout):
            await task
        assert (await client.get(upstream.url)).status_code == 200


async def test_slow_adds_latency_then_forwards(upstream: Upstream, injector: FaultInjector) -> None:
    """``slow`` delays the request by its latency, then the real server answers it."""
    injector.start("anthropic-api", "slow", latency=0.05)
    loop = asyncio.get_running_loop()
    async with client_for(injector) as client:
        sent = loop.time()
        response = await client.get(upstream.url)
    assert response.status_code == 200
    assert len(upstream.arrivals) == 1
    assert upstream.arrivals[0] - sent >= 0.049  # causal: it reached the server after the delay


async def test_slow_beyond_the_read_timeout_is_a_read_timeout(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """A ``slow`` latency at or past the request's read timeout ends as httpx.ReadTimeout."""
    injector.start("anthropic-api", "slow", latency=10.0)
    async with client_for(injector) as client:
        with pytest.raises(httpx.ReadTimeout, match="too slowly"):
            await client.get(upstream.url, timeout=httpx.Timeout(5.0, read=0.02))
    assert upstream.arrivals == []


def test_slow_jitter_stays_within_its_bounds() -> None:
    """Latency ± jitter draws vary, stay within the bounds and never go negative."""
    injector = FaultInjector(rng=random.Random(3))
    outage = injector.start("openai-api", "slow", latency=0.1, jitter=0.05)
    delays = [injector.delay(outage) for _ in range(500)]
    assert all(0.05 <= d <= 0.15 for d in delays)
    assert max(delays) - min(delays) > 0.05
    wide = injector.start("openai-api", "slow", latency=0.01, jitter=1.0)
    assert min(injector.delay(wide) for _ in range(500)) == 0.0


async def test_errors_answers_503_without_the_network(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """``errors`` answers a synthetic 503 with a provider-shaped JSON body."""
    injector.start("anthropic-api", "errors")
    async with client_for(injector) as client:
        response = await client.get(upstream.url)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "overloaded_error"
    assert "retry-after" not in response.headers
    assert upstream.arrivals == []
    with pytest.raises(httpx.HTTPStatusError):
        response.raise_for_status()


async def test_errors_429_carries_retry_after_like_telegram(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """A 429 outage on Telegram sends Retry-After and ``parameters.retry_after`` in the body."""
    injector.start("telegram-api", "errors", status=429, retry_after=7)
    async with client_for(injector, "telegram-api") as client:
        response = await client.get(upstream.url)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    body = response.json()
    assert body["ok"] is False
    assert body["error_code"] == 429
    assert body["parameters"] == {"retry_after": 7}
    assert upstream.arrivals == []


async def test_errors_429_default_retry_after_is_what_remains(
    upstream: Upstream,
) -> None:
    """Without an explicit retry_after, a 429 says to come back when the outage ends (≤ 60 s)."""
    clock = Clock()
    injector = FaultInjector(clock=clock)
    injector.start("openai-api", "errors", status=429, duration=30)
    clock.now += 20.5
    async with client_for(injector, "openai-api") as client:
        response = await client.get(upstream.url)
    assert response.headers["retry-after"] == "10"
    assert response.json()["error"]["type"] == "rate_limit_exceeded"


async def test_probability_hits_the_expected_share(
    upstream: Upstream, injector: FaultInjector
) -> None:
    """With probability p only about p of the requests fail; the rest reach the server."""
    injector.start("anthropic-api", "errors", probability=0.3)
    async with client_for(injector) as client:
        statuses = [(await client.get(upstream.url)).status_code for _ in range(200)]
    failed = statuses.count(503)
    assert 40 <= failed <= 80  # binomial(200, 0.3): mean 60, sd 6.5
    assert len(upstream.arrivals) == 200 - failed
    assert injector.active()[0].hits == failed


def test_probability_draws_come_from_the_injected_random() -> None:
    """The same seed gives the same hits; probability 0 never hits and 1 always does."""

    def pattern(seed: int) -> list[bool]:
        injector = FaultInjector(rng=random.Random(seed))
        injector.start("database", "down", probability=0.5)
        return [injector.hit("database") is not None for _ in range(64)]

    assert pattern(11) == pattern(11)
    assert pattern(11) != pattern(12)
    injector = FaultInjector(rng=random.Random(1))
    injector.start("database", "down", probability=0.0)
    assert not any(injector.hit("database") for _ in range(100))
    injector.start("database", "down", probability=1.0)
    assert all(injector.hit("database") for _ in range(100))


async def test_expiry_with_an_injected_clock(upstream: Upstream) -> None:
    """An outage ends by itself once the clock passes its expiry, and traffic flows again."""
    clock = Clock()
    injector = FaultInjector(clock=clock)
    events: list[OutageEvent] = []
    injector.add_listener(events.append)
    injector.start("anthropic-api", "down", duration=30)
    clock.now += 29.5
    assert injector.active()[0].remaining_s == pytest.approx(0.5)
    clock.now += 0.5
    async with client_for(injector) as client:
        assert (await client.get(upstream.url)).status_code == 200
    assert injector.active() == []
    assert [(e.kind, e.cause) for e in events] == [("started", None), ("ended", "expired")]


async def test_expiry_fires_by_itself_in_real_time() -> None:
    """With no call and no lookup, the loop timer ends a short outage and tells the listeners."""
    injector = FaultInjector()
    ended: list[OutageEvent] = []
    injector.add_listener(lambda event: ended.append(event) if event.kind == "ended" else None)
    injector.start("telegram-api", "down", duration=0.03)
    await async_wait_for(lambda: ended, timeout=5)
    assert ended[0].cause == "expired"
    assert injector.active() == []


def test_duration_default_and_cap() -> None:
    """Outages default to 60 s and may last at most 15 min; zero, negative or longer is refused."""
    injector = FaultInjector()
    assert injector.start("database", "down").remaining_s == 60.0
    assert injector.start("database", "down", duration=MAX_DURATION).duration == 900.0
    for bad in (MAX_DURATION + 0.01, 0, -1, float("inf"), float("nan")):
        with pytest.raises(OutageError, match="15 min"):
            injector.start("database", "down", duration=bad)
    with pytest.raises(ValueError):
        injector.start("database", "down", duration=3600)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "explode"}, "mode"),
        ({"probability": 1.5}, "probability"),
        ({"probability": -0.1}, "probability"),
        ({"status": 404}, "status"),
        ({"status": True}, "status"),
        ({"latency": -1}, "latency"),
        ({"retry_after": -2}, "retry_after"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_outages_are_refused(kwargs: dict[str, object], match: str) -> None:
    """A bad mode, probability, status, latency, retry_after or name raises OutageError."""
    injector = FaultInjector()
    args = {"name": "anthropic-api", "mode": "errors"} | kwargs
    with pytest.raises(OutageError, match=match):
        injector.start(**args)  # type: ignore[arg-type]
    assert injector.active() == []


def test_listeners_get_started_and_ended_and_a_raising_one_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Listeners see started/ended (stopped, replaced); one that raises is logged and skipped."""
    injector = FaultInjector()
    seen: list[tuple[str, str, str | None]] = []

    def broken(event: OutageEvent) -> None:
        raise RuntimeError("listener bug")

    injector.add_listener(broken)
    injector.add_listener(lambda e: seen.append((e.kind, e.outage.mode, e.cause)))
    with caplog.at_level(logging.ERROR, logger="khronos.faults"):
        injector.start("openai-api", "down")
        injector.start("openai-api", "slow")
        injector.stop("openai-api")
    assert seen == [
        ("started", "down", None),
        ("ended", "down", "replaced"),
        ("started", "slow", None),
        ("ended", "slow", "stopped"),
    ]
    assert sum("listener bug" in r.exc_text for r in caplog.records if r.exc_text) == 4
    injector.remove_listener(broken)
    injector.start("openai-api", "down")
    assert len(seen) == 5


def test_stop_by_name_and_all() -> None:
    """``stop(name)`` ends that outage only; ``stop()`` ends all; an unknown name ends nothing."""
    injector = FaultInjector()
    injector.start("anthropic-api", "down")
    injector.start("database", "errors")
    injector.start("telegram-api", "slow")
    assert [o.name for o in injector.stop("database")] == ["database"]
    assert [o.name for o in injector.active()] == ["anthropic-api", "telegram-api"]
    assert injector.stop("database") == []
    assert sorted(o.name for o in injector.stop()) == ["anthropic-api", "telegram-api"]
    assert injector.active() == []


def test_outage_json_shape() -> None:
    """``to_dict`` is JSON-ready with the name, mode, probability and seconds remaining."""
    clock = Clock()
    injector = FaultInjector(clock=clock)
    injector.start("anthropic-api", "errors", status=429, duration=10, reason="drill")
    clock.now += 4
    data = injector.active()[0].to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["name"] == "anthropic-api"
    assert data["status"] == 429
    assert data["remaining_s"] == 6.0
    assert data["reason"] == "drill"
    assert "expires_at" not in data


async def test_before_call_hook_for_non_http_dependencies() -> None:
    """``before_call`` raises for down/errors/timeout, sleeps for slow, and is a no-op otherwise."""
    injector = FaultInjector()
    await injector.before_call("database")
    injector.start("database", "down")
    with pytest.raises(InjectedFaultError, match="down"):
        await injector.before_call("database")
    injector.start("database", "errors", status=500)
    with pytest.raises(InjectedFaultError) as caught:
        await injector.before_call("database")
    assert caught.value.status == 500
    injector.start("database", "timeout")
    with pytest.raises(InjectedFaultError, match="timeout"):
        await injector.before_call("database", timeout=0.01)
    injector.start("database", "slow", latency=0.01)
    await injector.before_call("database")
    assert injector.active()[0].hits == 1


async def test_aclose_closes_the_inner_transport(upstream: Upstream) -> None:
    """Closing the fault transport closes the wrapped transport's connection pool."""
    inner = httpx.AsyncHTTPTransport()
    transport = FaultTransport(inner, FaultInjector(), "anthropic-api")
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(upstream.url)).status_code == 200
        assert len(inner._pool.connections) == 1
    assert inner._pool.connections == []
