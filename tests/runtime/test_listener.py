"""The public port's listener under descriptor exhaustion: accept() failures are counted."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import textwrap
from asyncio.subprocess import PIPE
from typing import Any

import httpx
import pytest

from khronos_cli.runtime.http import PublicServer
from tests.support import async_wait_for

CLIENTS = textwrap.dedent("""
    import socket, sys
    held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(40)]
    print("connected", flush=True)
    sys.stdin.read()
""")


class API:
    """The least a public port needs to serve /health."""

    ready = True
    webhook_secret = None

    def breakers(self) -> dict[str, Any]:
        return {}

    def limiters(self) -> dict[str, Any]:
        return {}

    def metrics(self) -> bytes:
        return b""

    async def chat(self, message: str, *, user: str) -> str:
        return message

    async def send(self, chat_id: int, text: str) -> dict[str, Any]:
        return {}

    async def webhook(self, update: dict[str, Any]) -> None:
        return None


async def test_accept_failures_are_one_log_line_not_a_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With no descriptor left, failed accept()s are one warning and, at close, one count
    (asyncio's own handler logs a traceback per attempt); with descriptors back it serves."""
    server = PublicServer(API(), port=0)
    await server.startup()
    clients = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENTS, str(server.port), stdin=PIPE, stdout=PIPE
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with caplog.at_level(logging.INFO):
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), hard))
            try:
                await async_wait_for(
                    lambda: any("accept" in r.getMessage() for r in caplog.records),
                    timeout=10,
                    interval=0.05,
                )
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert clients.stdout is not None and await clients.stdout.readline() == b"connected\n"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/health")).status_code == 200
    finally:
        await clients.communicate(b"")
        await server.aclose()  # writes the count of what was not logged
    assert not [r for r in caplog.records if "out of system resource" in r.getMessage()]
    first, *summary = [r for r in caplog.records if "could not accept" in r.getMessage()]
    assert first.getMessage().endswith("(repeats are counted, not logged)") and not first.exc_info
    assert all("more in the last" in r.getMessage() for r in summary) and len(summary) <= 1
