"""Where the worker's HTTP calls leave: aiohttp under httpx, a direct path, injected outages.

:class:`Wire` is httpx-aiohttp's transport (aiohttp's connection pool and C parser under the
httpx API the clients use), plus :meth:`Wire.send`: an API call whose URL, head and JSON body
the client has already made goes straight to aiohttp. An ``httpx.Request`` (its URL parsed again
as text, its headers copied twice) cost a fifth of each call's CPU. The answer is a
:class:`WireResponse`: aiohttp's own answer read through the few members the clients use of
``httpx.Response`` (:class:`Response`); an ``httpx.Response`` around it (its headers decoded and
copied, its body read through four generators per chunk) cost a third of a streamed LLM call's
CPU. aiohttp's errors are mapped to httpx's as httpx-aiohttp maps them.

:class:`FaultTransport` applies ``khronos outage`` (:mod:`.faults`) before whatever it wraps, on
both paths: the same draw, the same synthetic failures, the same request timeouts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import NoReturn, Protocol, TypeVar

import httpx
from aiohttp import ClientResponse, ClientSession, ClientTimeout, StreamReader
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AIOHTTP_EXC_MAP
from yarl import URL

from khronos_cli.upstream.faults import FaultInjector, Outage

__all__ = ["FaultTransport", "Response", "Wire", "WireResponse", "client_timeout"]

_NO_TYPE = ("Content-Type",)
R = TypeVar("R")


def client_timeout(timeout: httpx.Timeout) -> ClientTimeout:
    """httpx's timeouts as aiohttp's, the way httpx-aiohttp translates them."""
    return ClientTimeout(sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool)


def as_httpx_error(exc: Exception) -> Exception:
    """The httpx error httpx-aiohttp makes of an aiohttp error (the most specific one its map
    names), or ``exc`` itself when it maps none."""
    mapped: type[Exception] | None = None
    for aiohttp_error, httpx_error in AIOHTTP_EXC_MAP.items():
        if isinstance(exc, aiohttp_error) and (mapped is None or issubclass(httpx_error, mapped)):
            mapped = httpx_error
    return exc if mapped is None else mapped(str(exc))


def _raise_as_httpx(exc: Exception) -> NoReturn:
    """Raise ``exc`` as :func:`as_httpx_error` maps it (itself when it maps to nothing)."""
    mapped = as_httpx_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


class Response(Protocol):
    """What the clients read of an HTTP answer: an ``httpx.Response`` or a WireResponse."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # names in any case

    @property
    def content(self) -> bytes: ...  # once read

    async def aread(self) -> bytes: ...

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class WireResponse:
    """An aiohttp answer as a :class:`Response`: its status, its headers (aiohttp's own
    case-insensitive mapping), its body read whole or chunk by chunk, decompressed by aiohttp."""

    __slots__ = ("_answer", "_content", "headers", "status_code")

    def __init__(self, answer: ClientResponse, content: bytes | None = None) -> None:
        self._answer = answer
        self._content = content
        self.status_code: int = answer.status
        self.headers: Mapping[str, str] = answer.headers

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            try:
                self._content = await self._answer.read()
            except Exception as exc:
                _raise_as_httpx(exc)
        return self._content

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return _Chunks(self._answer.content)

    async def aclose(self) -> None:
        self._answer.release()  # a body left unread closes the connection instead


class _Chunks:
    """A body's chunks as aiohttp reads them, its errors as httpx's. A class, not an async
    generator: the loop keeps every async generator it starts in a WeakSet (a cost per answer)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: StreamReader) -> None:
        self._stream = stream

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._stream.readany()
        except Exception as exc:
            _raise_as_httpx(exc)
        if not chunk:
            raise StopAsyncIteration
        return chunk


class Wire(AiohttpTransport):
    """httpx-aiohttp's transport, with :meth:`send` for calls made ready by the client."""

    direct = True

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        timeout: ClientTimeout,
        whole: bool = False,
    ) -> Response:
        """One request with a whole body; the answer's head, its body unread (``aread`` or
        ``aiter_raw``, then ``aclose``), or with ``whole`` read and the connection released.
        aiohttp's errors come out as httpx's."""
        if not isinstance(self.client, ClientSession):
            self.client = self.get_client()
        try:
            answer = await self.client.request(
                method,
                url,
                headers=headers,
                data=body or None,
                skip_auto_headers=None if body else _NO_TYPE,  # as httpx: no body, no type
                allow_redirects=False,
                auto_decompress=True,  # httpx's way too: the body is read as it was sent
                compress=False,
                timeout=timeout,
            ).__aenter__()
            if not whole:
                return WireResponse(answer)
            try:
                return WireResponse(answer, await answer.read())
            finally:
                answer.release()
        except Exception as exc:  # a try costs nothing until it catches; a with, every call
            _raise_as_httpx(exc)


class FaultTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport that applies the outage on ``dependency`` before ``inner``."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, injector: FaultInjector, dependency: str
    ) -> None:
        self._inner = inner
        self._injector = injector
        self._dependency = dependency
        self._wire = inner if isinstance(inner, Wire) else None
        self.direct = self._wire is not None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        outage = self._injector.hit(self._dependency)
        if outage is None:
            return await self._inner.handle_async_request(request)
        return await self._during(outage, request, self._inner.handle_async_request)

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        timeout: ClientTimeout,
        whole: bool = False,
    ) -> Response:
        """:meth:`Wire.send` through the outage, when ``inner`` is a :class:`Wire`."""
        wire = self._wire
        if wire is None:
            raise TypeError("FaultTransport.send needs a Wire inside")
        outage = self._injector.hit(self._dependency)
        if outage is None:
            return await wire.send(method, url, headers, body, timeout, whole)
        limits = {"connect": timeout.sock_connect, "read": timeout.sock_read}
        request = httpx.Request(
            method, str(url), headers=headers, content=body, extensions={"timeout": limits}
        )

        async def through(_: httpx.Request) -> Response:
            return await wire.send(method, url, headers, body, timeout, whole)

        return await self._during(outage, request, through)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _during(
        self,
        outage: Outage,
        request: httpx.Request,
        through: Callable[[httpx.Request], Awaitable[R]],
    ) -> R | httpx.Response:
        read_timeout = _read_timeout(request)
        if outage.mode == "down":
            raise httpx.ConnectError(
                f"injected outage: {self._dependency} is down", request=request
            )
        if outage.mode == "timeout":
            await self._injector.hang(outage, read_timeout)
            raise httpx.ReadTimeout(
                f"injected outage: {self._dependency} did not answer", request=request
            )
        if outage.mode == "slow":
            delay = self._injector.delay(outage)
            if read_timeout is not None and delay >= read_timeout:
                await asyncio.sleep(read_timeout)
                raise httpx.ReadTimeout(
                    f"injected outage: {self._dependency} answered too slowly", request=request
                )
            await asyncio.sleep(delay)
            return await through(request)
        return self._error_response(outage, request)

    def _error_response(self, outage: Outage, request: httpx.Request) -> httpx.Response:
        status = outage.status
        headers = {"content-type": "application/json", "x-khronos-injected": outage.mode}
        retry_after: int | None = None
        if status == 429 or outage.retry_after is not None:
            retry_after = self._injector.retry_after(outage)
            headers["retry-after"] = str(retry_after)
        body = _error_body(self._dependency, status, retry_after)
        return httpx.Response(
            status, headers=headers, content=json.dumps(body).encode(), request=request
        )


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    if not isinstance(timeout, dict):
        return None
    value = timeout.get("read")
    return float(value) if isinstance(value, int | float) else None


def _error_body(dependency: str, status: int, retry_after: int | None) -> dict[str, object]:
    """An error body shaped like the one the real provider sends for that status."""
    limited = status == 429
    message = "Too Many Requests (injected)" if limited else "Service Unavailable (injected)"
    if dependency.startswith("telegram"):
        body: dict[str, object] = {"ok": False, "error_code": status, "description": message}
        if retry_after is not None:
            body["description"] = f"{message}: retry after {retry_after}"
            body["parameters"] = {"retry_after": retry_after}
        return body
    if dependency.startswith("anthropic"):
        kind = "rate_limit_error" if limited else "overloaded_error"
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = "rate_limit_exceeded" if limited else "server_error"
    return {"error": {"message": message, "type": kind, "code": kind}}
