"""Helpers for tests: free loopback ports, waiting on a condition with a deadline, a hand-driven
clock, a breaker call, and a throwaway redis-server."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
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

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RedisServer:
    """A ``redis-server`` process of the test session's own, on a loopback port.

    ``stop()`` and ``start()`` kill and bring back the same server (same port) for fault tests.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, timeout=15)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(16).startswith(b"+OK")


class Collector:
    """An HTTP server on a loopback port that keeps every JSON body POSTed to it (a webhook
    receiver), in a thread of its own; ``with Collector() as hook: ... hook.bodies``."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        bodies: list[Any] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def khronos_database(path: Path, *, megabytes: int = 0, chats: int = 40) -> None:
    """A real khronos.db at ``path`` (the store's migrations), holding about ``megabytes`` MB of
    conversation turns spread over ``chats`` chats, dated now (so retention keeps them)."""
    import sqlite3

    from khronos_cli.bot.schema import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        for migration in MIGRATIONS:
            for statement in migration:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        text = "x" * 2000
        rows = megabytes * 500
        db.executemany(
            "INSERT INTO turns (chat_id, role, text, created_at) VALUES (?, 'user', ?, ?)",
            ((i % chats, text, time.time()) for i in range(rows)),
        )
        db.execute("COMMIT")
    finally:
        db.close()
    path.chmod(0o600)
