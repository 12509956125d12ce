"""Per-call cost of khronos's circuit breaker beside pybreaker (its `calling()` context manager
around an await, and `call_async()`, the async path its docs give) and a bare await.

Run: ``.venv/bin/python benchmarks/breaker.py [--redis-url URL] [--calls N] [--rounds R]``.
Without ``--redis-url`` a throwaway ``redis-server`` is started on a free loopback port.

Every variant runs ``--rounds`` times, interleaved, on one event loop; the table shows the median
round. Round trips per call with Redis storage come from ``INFO stats``
``total_commands_processed`` deltas, minus the INFO command itself. Figures are printed, never
asserted; compare ratios within one run (a 2-core machine is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pybreaker
import redis.asyncio

from benchmarks.common import redis_server
from khronos_cli.config import BreakerSettings
from khronos_cli.errors import CircuitOpenError
from khronos_cli.resilience.breaker import CircuitBreaker
from khronos_cli.resilience.breaker.storage import RedisBreakerStorage

SETTINGS = BreakerSettings("bench", timeout=10.0, reset_timeout=3600.0, volume_threshold=10**9)


async def noop() -> None:
    return None


async def bare(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await noop()
    return time.perf_counter() - start


async def timeout_only(n: int) -> float:
    """What a per-call ``asyncio.timeout()`` alone costs (the watchdog's reason to exist)."""
    start = time.perf_counter()
    for _ in range(n):
        async with asyncio.timeout(10.0):
            await noop()
    return time.perf_counter() - start


def khronos_with(breaker: CircuitBreaker) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            async with breaker:
                await noop()
        return time.perf_counter() - start

    return run


def khronos_reject(breaker: CircuitBreaker) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            try:
                async with breaker:
                    await noop()
            except CircuitOpenError:
                pass
        return time.perf_counter() - start

    return run


def pybreaker_calling(breaker: pybreaker.CircuitBreaker) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            with breaker.calling():
                await noop()
        return time.perf_counter() - start

    return run


def pybreaker_call_async(
    breaker: pybreaker.CircuitBreaker, *, rejects: bool = False
) -> Callable[[int], Awaitable[float]]:
    """pybreaker's documented path for coroutines: ``call_async`` (a Tornado coroutine, which
    runs on the asyncio loop since Tornado 5)."""

    async def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            try:
                await breaker.call_async(noop)
            except pybreaker.CircuitBreakerError:
                if not rejects:
                    raise
        return time.perf_counter() - start

    return run


def pybreaker_reject(breaker: pybreaker.CircuitBreaker) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            try:
                with breaker.calling():
                    await noop()
            except pybreaker.CircuitBreakerError:
                pass
        return time.perf_counter() - start

    return run


async def commands(client: Any) -> int:
    return int((await client.info("stats"))["total_commands_processed"])


async def round_trips(client: Any, run: Callable[[int], Awaitable[float]], n: int) -> float:
    first = await commands(client)
    info_cost = await commands(client) - first
    start = await commands(client)
    await run(n)
    return max(0, await commands(client) - start - info_cost) / n


async def measure(redis_url: str, calls: int, rounds: int) -> list[dict[str, Any]]:
    closed = CircuitBreaker(SETTINGS)
    rejecting = CircuitBreaker(SETTINGS)
    await rejecting.force_open("benchmark", expires_in=3600)
    py_closed = pybreaker.CircuitBreaker(fail_max=10**9, reset_timeout=3600)
    py_open = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    py_open.open()
    storage = RedisBreakerStorage.from_url(redis_url, poll_interval=3600)
    shared = CircuitBreaker(SETTINGS, storage=storage)
    shared_open = CircuitBreaker(BreakerSettings("bench-open", timeout=10.0), storage=storage)
    await shared.startup()
    await shared_open.startup()
    await shared_open.force_open("benchmark", expires_in=3600)
    variants: dict[str, Callable[[int], Awaitable[float]]] = {
        "bare await": bare,
        "asyncio.timeout() per call, no breaker": timeout_only,
        "khronos closed, async with": khronos_with(closed),
        "pybreaker closed, calling()": pybreaker_calling(py_closed),
        "pybreaker closed, call_async() (its docs' async path)": pybreaker_call_async(py_closed),
        "khronos rejection": khronos_reject(rejecting),
        "pybreaker rejection": pybreaker_reject(py_open),
        "pybreaker rejection, call_async()": pybreaker_call_async(py_open, rejects=True),
        "khronos closed, Redis storage": khronos_with(shared),
        "khronos rejection, Redis storage": khronos_reject(shared_open),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        await run(calls // 10)  # warm up
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].append(await run(calls) / calls * 1e6)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        trips = {
            "khronos closed, Redis storage": await round_trips(client, khronos_with(shared), 1000),
            "khronos rejection, Redis storage": await round_trips(
                client, khronos_reject(shared_open), 1000
            ),
        }
    finally:
        await client.aclose()
        for breaker in (shared, shared_open, closed, rejecting):
            await breaker.aclose()
        await storage.aclose()
    return [
        {"name": name, "us": statistics.median(values), "round_trips": trips.get(name)}
        for name, values in samples.items()
    ]


def table(rows: list[dict[str, Any]]) -> str:
    by = {row["name"]: row for row in rows}
    bare_us = by["bare await"]["us"]
    py_us = by["pybreaker closed, calling()"]["us"]
    goals = {
        "khronos closed, async with": [
            ("≤ bare + 2 µs", by["khronos closed, async with"]["us"] - bare_us <= 2.0),
            ("≤ 0.7× pybreaker", by["khronos closed, async with"]["us"] <= 0.7 * py_us),
        ],
        "khronos rejection": [("≤ 2 µs", by["khronos rejection"]["us"] <= 2.0)],
        "khronos closed, Redis storage": [
            ("0 round trips", by["khronos closed, Redis storage"]["round_trips"] == 0),
            ("≤ bare + 2 µs", by["khronos closed, Redis storage"]["us"] - bare_us <= 2.0),
        ],
        "khronos rejection, Redis storage": [
            ("0 round trips", by["khronos rejection, Redis storage"]["round_trips"] == 0),
            ("≤ 2 µs", by["khronos rejection, Redis storage"]["us"] <= 2.0),
        ],
    }
    lines = [
        "| path | µs/call | above bare await (µs) | × pybreaker calling() "
        "| Redis round trips/call | goal | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        trips = "" if row["round_trips"] is None else f"{row['round_trips']:.3f}"
        goal_list = goals.get(row["name"], [])
        goal = "; ".join(text for text, _ in goal_list) or "—"
        met = "; ".join("yes" if passed else "NO" for _, passed in goal_list) or "—"
        lines.append(
            f"| {row['name']} | {row['us']:.2f} | {row['us'] - bare_us:+.2f} "
            f"| {row['us'] / py_us:.2f} | {trips} | {goal} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="use this Redis instead of a throwaway server")
    parser.add_argument("--calls", type=int, default=100_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant")
    args = parser.parse_args()
    versions = f"python {sys.version.split()[0]}, pybreaker {metadata.version('pybreaker')}"
    print(f"{versions}, {args.calls} calls x {args.rounds} rounds, median round", file=sys.stderr)
    if args.redis_url:
        rows = asyncio.run(measure(args.redis_url, args.calls, args.rounds))
    else:
        with redis_server() as redis_process:
            rows = asyncio.run(measure(redis_process.url, args.calls, args.rounds))
    print(table(rows))


if __name__ == "__main__":
    main()
