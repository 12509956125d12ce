"""The worker's direct path (a Wire under a FaultTransport): the same request as through httpx,
and ``khronos outage`` applied to it as to any other call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from httpx_aiohttp.transport import map_aiohttp_exceptions

from khronos_cli.errors import UpstreamError
from khronos_cli.upstream.base import UpstreamClient
from khronos_cli.upstream.faults import FaultInjector
from khronos_cli.upstream.transport import FaultTransport, Wire, as_httpx_error

HEADERS = ("host", "user-agent", "content-type", "content-length", "x-api-key")


@dataclass
class Seen:
    """A real HTTP server that keeps what reached it."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Seen]:
    """An aiohttp server on a free loopback port that answers every request with ``{"ok": 1}``."""
    seen = Seen()

    async def anything(request: web.Request) -> web.Response:
        head = {name: request.headers.get(name) for name in HEADERS}
        body = await request.read()
        seen.requests.append(
            {"method": request.method, "path": request.path_qs, "body": body, **head}
        )
        return web.json_response({"ok": 1})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    seen.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield seen
    finally:
        await runner.cleanup()


def through_wire(injector: FaultInjector) -> FaultTransport:
    return FaultTransport(Wire(), injector, "anthropic-api")


async def test_the_direct_path_sends_what_the_httpx_path_sends(server: Seen) -> None:
    """Method, path, head and body (UTF-8, its length in bytes) as httpx's own transport sends."""
    calls: list[tuple[str, str, Any]] = [
        ("POST", "/v1/messages?beta=true", {"text": "héllo ✓", "n": [1, 2]}),
        ("GET", "/", None),
        ("POST", "/bot123:abc/getMe", None),
    ]
    for transport in (httpx.AsyncHTTPTransport(), through_wire(FaultInjector())):
        client = UpstreamClient(server.url, headers={"x-api-key": "k"}, transport=transport)
        assert (client._wire is not None) == isinstance(transport, FaultTransport)
        async with client:
            for method, path, body in calls:
                response = await client._send(method, path, json=body)
                assert (response.status_code, client._json(response)) == (200, {"ok": 1})
    by_httpx, by_wire = server.requests[:3], server.requests[3:]
    assert by_wire == by_httpx
    assert by_wire[0]["content-length"] == str(len(by_wire[0]["body"]))


async def test_outages_apply_to_the_direct_path_once_per_call(server: Seen) -> None:
    """down never reaches the server, errors answers a 503, slow goes through: one draw a call."""
    injector = FaultInjector()
    async with UpstreamClient(server.url, transport=through_wire(injector)) as client:
        injector.start("anthropic-api", "down")
        with pytest.raises(UpstreamError) as caught:
            await client._send("POST", "/v1/messages", json={"a": 1})
        assert caught.value.code == "network"
        injector.start("anthropic-api", "errors", status=503)
        response = await client._send("POST", "/v1/messages", json={"a": 1})
        assert response.status_code == 503
        assert client._json(response)["error"]["type"] == "overloaded_error"
        assert injector.active()[0].hits == 1
        assert server.requests == []
        injector.start("anthropic-api", "slow", latency=0.01)
        response = await client._send("POST", "/v1/messages", json={"a": 1})
        assert response.status_code == 200
        assert [r["body"] for r in server.requests] == [b'{"a":1}']
        assert injector.active()[0].hits == 1


def test_aiohttp_errors_map_to_httpx_as_httpx_aiohttp_maps_them() -> None:
    """as_httpx_error makes the same httpx error, with the same text, as httpx-aiohttp does."""
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    errors: list[Exception] = [
        aiohttp.ServerTimeoutError("read timed out"),
        aiohttp.SocketTimeoutError("socket timed out"),
        aiohttp.ClientConnectorError(key, OSError(111, "refused")),
        aiohttp.ClientPayloadError("cut short"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("reset"),
        ValueError("not aiohttp's"),
    ]
    for error in errors:
        try:
            with map_aiohttp_exceptions():
                raise error
        except Exception as expected:
            mapped = as_httpx_error(error)
            assert type(mapped) is type(expected) and str(mapped) == str(expected)
