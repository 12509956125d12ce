"""The control socket: modes, one instance per state dir, stale sockets, and bad clients."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from khronos_cli.control.client import ControlClient
from khronos_cli.control.protocol import socket_path
from khronos_cli.control.server import ControlServer, bind_unix_socket
from khronos_cli.errors import AlreadyRunningError, ControlError, NotRunningError


class Target:
    """A worker stand-in that records what the socket asked of it."""

    def __init__(self) -> None:
        self.forced: list[tuple[str, str | None, str, float | None]] = []
        self.stop_started = asyncio.Event()
        self.stop_finished = asyncio.Event()

    def status(self) -> dict[str, Any]:
        return {"state": "ready", "pid": os.getpid()}

    def breakers(self) -> dict[str, Any]:
        return {"anthropic-api": {"state": "closed", "stats": {}}}

    def limiters(self) -> dict[str, Any]:
        return {"telegram": {"executing": 0, "queued": 0, "done": 0, "dropped": 0}}

    def outages(self) -> list[dict[str, Any]]:
        return []

    async def replica_list(self) -> list[dict[str, Any]]:
        return [{"replica": "local"}]

    async def force_breaker(
        self, name: str, state: str | None, *, reason: str, duration: float | None
    ) -> dict[str, Any]:
        if name != "anthropic-api":
            raise KeyError(name)
        self.forced.append((name, state, reason, duration))
        return {"state": state or "closed"}

    def start_outage(self, spec: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no outages here")

    def stop_outages(self, name: str | None) -> list[dict[str, Any]]:
        return []

    async def event_stream(self) -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            yield {"event": "tick", "n": i}

    async def stop_stream(
        self, *, force: bool, deadline: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        self.stop_started.set()
        for step, name in enumerate(("http", "telegram"), start=1):
            yield {"event": "step_started", "step": step, "name": name}
            await asyncio.sleep(0)
            yield {"event": "step_finished", "step": step, "name": name, "outcome": "done"}
        yield {"event": "done", "result": "clean", "exit_code": 0, "force": force}
        self.stop_finished.set()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ControlServer, Target]]:
    target = Target()
    server = ControlServer(socket_path(tmp_path / "state"), target)
    await server.startup()
    try:
        yield server, target
    finally:
        await server.aclose()


def raw_exchange(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def call(server: ControlServer, method: str, path: str, body: Any = None) -> Any:
    def run() -> Any:
        with ControlClient(server.path.parent) as client:
            if method == "GET":
                return client.get(path)
            return client.post(path, body)

    return await asyncio.to_thread(run)


async def test_socket_is_0600_in_a_0700_directory(served: tuple[ControlServer, Target]) -> None:
    """Only the owner can reach the socket: the file is 0600 and its directory 0700."""
    server, _ = served
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)


async def test_live_socket_refuses_a_second_instance(served: tuple[ControlServer, Target]) -> None:
    """Binding where a live server answers raises AlreadyRunningError and leaves it serving."""
    server, _ = served
    with pytest.raises(AlreadyRunningError, match="already running"):
        bind_unix_socket(server.path)
    assert (await call(server, "GET", "/status"))["state"] == "ready"


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    """A socket file nobody listens on (a crashed run) is replaced, not a reason to refuse."""
    path = tmp_path / "khronos.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert path.exists()
    sock = bind_unix_socket(path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))
    finally:
        sock.close()


async def test_reads_and_writes_reach_the_target(served: tuple[ControlServer, Target]) -> None:
    """GET reads and POST writes go to the target and come back as JSON."""
    server, target = served
    assert (await call(server, "GET", "/breakers"))["anthropic-api"]["state"] == "closed"
    assert (await call(server, "GET", "/limiters"))["telegram"]["dropped"] == 0
    result = await call(
        server, "POST", "/breakers/anthropic-api/open", {"reason": "drill", "for": 5}
    )
    assert result == {"state": "open"}
    assert target.forced == [("anthropic-api", "open", "drill", 5)]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/breakers/nope/open", {}, 404),
        ("POST", "/breakers/anthropic-api/explode", {}, 404),
        ("POST", "/breakers/anthropic-api/open", {"for": -1}, 400),
        ("POST", "/breakers/anthropic-api/open", {"for": "soon"}, 400),
        ("POST", "/breakers/anthropic-api/open", [1, 2], 400),
        ("POST", "/outages", {"name": "x"}, 400),
        ("POST", "/stop", {"force": "yes"}, 400),
        ("GET", "/nowhere", None, 404),
    ],
)
async def test_bad_requests_get_4xx_json_and_change_nothing(
    served: tuple[ControlServer, Target], method: str, path: str, body: Any, status: int
) -> None:
    """Unknown names, bad arguments and unknown paths answer a 4xx JSON error; nothing changes."""
    server, target = served
    with pytest.raises(ControlError) as caught:
        await call(server, method, path, body)
    assert caught.value.status == status
    assert target.forced == [] and not target.stop_started.is_set()


async def test_garbage_and_oversize_leave_the_server_serving(
    served: tuple[ControlServer, Target],
) -> None:
    """Raw garbage, broken JSON and an oversize body get 4xx answers; the server keeps serving."""
    server, _ = served
    garbage = await asyncio.to_thread(raw_exchange, server.path, b"\x00\xffNOT HTTP\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.") and b" 400 " in garbage.split(b"\r\n")[0]
    broken = b"POST /breakers/anthropic-api/open HTTP/1.1\r\nHost: k\r\nContent-Length: 5\r\n"
    broken += b"Content-Type: application/json\r\nConnection: close\r\n\r\n{oops"
    answer = await asyncio.to_thread(raw_exchange, server.path, broken)
    assert b" 400 " in answer.split(b"\r\n")[0] and b"not valid JSON" in answer
    big = b"x" * (200 * 1024)
    oversize = b"POST /breakers/anthropic-api/open HTTP/1.1\r\nHost: k\r\nConnection: close\r\n"
    oversize += (
        f"Content-Length: {len(big)}\r\nContent-Type: application/json\r\n\r\n".encode() + big
    )
    answer = await asyncio.to_thread(raw_exchange, server.path, oversize)
    assert b" 413 " in answer.split(b"\r\n")[0]
    assert (await call(server, "GET", "/status"))["state"] == "ready"


async def test_stop_streams_ndjson_events(served: tuple[ControlServer, Target]) -> None:
    """POST /stop streams one JSON object per event, ending with the done event."""
    server, _ = served

    def run() -> list[dict[str, Any]]:
        with ControlClient(server.path.parent) as client:
            return list(client.stream("POST", "/stop", {"force": False}))

    events = await asyncio.to_thread(run)
    assert [e["event"] for e in events] == ["step_started", "step_finished"] * 2 + ["done"]
    assert events[-1]["result"] == "clean"


async def test_client_leaving_mid_stream_does_not_hurt(
    served: tuple[ControlServer, Target],
) -> None:
    """A client that reads one event and hangs up leaves the server serving."""
    server, _ = served

    def first_event() -> dict[str, Any]:
        with ControlClient(server.path.parent) as client:
            stream: Iterator[dict[str, Any]] = client.stream("GET", "/events")
            return next(stream)

    assert (await asyncio.to_thread(first_event))["event"] == "tick"
    assert (await call(server, "GET", "/status"))["state"] == "ready"


def test_no_instance_is_not_running_error(tmp_path: Path) -> None:
    """With nothing on the state dir, the client raises NotRunningError (exit code 3)."""
    with ControlClient(tmp_path) as client, pytest.raises(NotRunningError) as caught:
        client.get("/status")
    assert caught.value.exit_code == 3 and str(tmp_path) in str(caught.value)


async def test_aclose_removes_only_its_own_socket(tmp_path: Path) -> None:
    """Closing removes the socket file, so the next start finds a clean state dir."""
    server = ControlServer(socket_path(tmp_path), Target())
    await server.startup()
    await server.aclose()
    assert not server.path.exists()
