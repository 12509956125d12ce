"""Helpers for tests: free loopback ports and waiting on a condition with a deadline."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], object], *, timeout: float = 30.0, interval: float = 0.01
) -> None:
    """Block until ``condition()`` is truthy, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        # Polling interval between checks of a condition, not a wait for an event to happen.
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], object | Awaitable[object]],
    *,
    timeout: float = 30.0,
    interval: float = 0.005,
) -> None:
    """Await until ``condition()`` (sync or async) is truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        await asyncio.sleep(interval)


async def through(breaker: Any, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``await fn(*args)`` inside ``async with breaker``, the breaker's one call path."""
    async with breaker:
        return await fn(*args)


class Clock:
    """A clock the test steps by hand (``clock.now += 5``), for windows, timeouts and expiry."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
