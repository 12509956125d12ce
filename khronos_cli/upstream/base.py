"""What the three API clients share: one httpx client each, one error boundary, one guard.

Every call is an *attempt* (send the request, parse the answer, raise :class:`UpstreamError` for
anything but success) handed to the client's **guard**: the worker's composition of that
dependency's limiter and circuit breaker. The attempt raises inside the guard, so the breaker sees
real failures; there are no hidden retries below it. Without a guard the attempt runs as is.

httpx errors are translated here and only here, and never carry the URL (Telegram puts the bot
token in the path) into a message. Whatever text an upstream or a transport error supplies (a
description, a reason) passes the client's :class:`~khronos_cli.redaction.Scrubber` before it
becomes part of an error: a proxy that quotes the request path must not put the token into the
outbox, the log or an HTTP answer.
"""

from __future__ import annotations

import email.utils
import errno
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol, TypeVar

import httpx
import orjson
from yarl import URL

from khronos_cli.errors import UpstreamError
from khronos_cli.redaction import Scrubber
from khronos_cli.resilience.limiter.jobs import PRIORITY_DEFAULT
from khronos_cli.upstream.transport import FaultTransport, Response, Wire, client_timeout

__all__ = [
    "Guard",
    "UpstreamClient",
    "connection_failure",
    "parse_retry_after",
    "through",
    "unguarded",
]

T = TypeVar("T")

USER_AGENT = "khronos/0.1"


def _encode(value: Any) -> bytes:
    """A request body: compact UTF-8 JSON, by orjson (a third of the stdlib encoder's cost; a
    NaN goes as null, where the stdlib encoder used here before refused it)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


_PARSED_URLS = 64


class Guard(Protocol):
    """Runs one attempt through a limiter and a breaker (or anything that keeps the contract)."""

    async def __call__(
        self,
        attempt: Callable[[], Awaitable[T]],
        /,
        *,
        key: Hashable | None = None,
        priority: int = PRIORITY_DEFAULT,
    ) -> T: ...


async def unguarded(
    attempt: Callable[[], Awaitable[T]],
    /,
    *,
    key: Hashable | None = None,
    priority: int = PRIORITY_DEFAULT,
) -> T:
    """A guard that guards nothing: for calls that must bypass the client's guard."""
    return await attempt()


async def through(
    guard: Guard | None, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
) -> T:
    """``await fn(*args, **kwargs)`` through ``guard`` (e.g. the ``database`` breaker), if any."""
    if guard is None:
        return await fn(*args, **kwargs)
    return await guard(lambda: fn(*args, **kwargs))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if seconds == seconds else None  # NaN -> None


def connection_failure(exc: BaseException) -> str | None:
    """What a failed connection was, named for what it is ("name not resolved", "connection
    refused", ...), or None when it was not one of those (a real timeout, a protocol error).

    The transport underneath (httpx-aiohttp) reports every connection failure as
    ``httpx.ConnectTimeout``; the OS error that really happened is in its chain of causes.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            if cause.errno == socket.EAI_AGAIN:
                return "name not resolved (the DNS server did not answer)"
            return "name not resolved (no such host)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (nothing listens on that host and port)"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the peer"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network unreachable (no route to that host)"
        cause = cause.__cause__ or cause.__context__
    return None


class UpstreamClient:
    """Base of the Telegram, Anthropic and OpenAI clients."""

    dependency = "upstream"

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        scrub: Scrubber | None = None,
    ) -> None:
        self._scrub = scrub or Scrubber()
        self._transport = transport or httpx.AsyncHTTPTransport()
        self._headers = httpx.Headers({"user-agent": USER_AGENT, **(headers or {})})
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=self._headers,
            timeout=self._timeout,
            transport=self._transport,
            follow_redirects=False,
        )
        self._base = base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}  # the API's paths, parsed once (a few dozen)
        # A JSON call's head, made once: what httpx.Request would work out for every request
        # (Host from the URL, the content type), so that each request only adds its length.
        host = httpx.URL(self._base).netloc.decode("ascii")
        self._bare_head = httpx.Headers({"Host": host, **self._headers})
        self._json_head = httpx.Headers({**self._bare_head, "Content-Type": "application/json"})
        self._limits = {"timeout": self._timeout.as_dict()}
        self._guard = guard
        # The worker's transports (a Wire, under a FaultTransport) take a call made ready here.
        wire = self._transport
        self._wire = wire if isinstance(wire, Wire | FaultTransport) and wire.direct else None
        self._wire_urls: dict[str, URL] = {}
        self._wire_timeout = client_timeout(self._timeout)
        self._wire_bare = dict(self._bare_head.items())
        self._wire_json = dict(self._json_head.items())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        """A health check (no guard: the breaker itself asks): raises unless the upstream
        answers at all below 500. Any answer, even a 404, proves it is reachable."""
        response = await self._send("GET", "/")
        if response.status_code >= 500:
            raise UpstreamError(
                self.dependency,
                f"health check answered {response.status_code}",
                status=response.status_code,
            )

    async def _guarded(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        key: Hashable | None = None,
        priority: int = PRIORITY_DEFAULT,
        guard: Guard | None = None,
    ) -> T:
        """``attempt`` through ``guard`` (default: this client's), or as is without one."""
        chosen = guard or self._guard
        if chosen is None:
            return await attempt()
        return await chosen(attempt, key=key, priority=priority)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response:
        """One HTTP exchange, with transport failures translated to UpstreamError.

        A JSON call (every API method) goes straight to the transport: ``AsyncClient.request``
        would merge URLs, cookies, auth and redirects that these APIs never use, at about a
        third of the bot's CPU per update. Uploads (``data``/``files``) take the client.
        """
        try:
            if kwargs:
                extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
                return await self._http.request(method, path, json=json, **kwargs, **extra)
            return await self._exchange(method, path, json, timeout)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    async def _exchange(self, method: str, path: str, json: Any, timeout: float | None) -> Response:
        if self._wire is not None:  # the body comes read
            return await self._send_direct(self._wire, method, path, json, timeout, whole=True)
        response = await self._open(method, path, json, timeout)
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _open(
        self, method: str, path: str, json: Any, timeout: float | None = None
    ) -> Response:
        """Send a JSON request straight to the transport; the answer's head, its body unread
        (``aread``/``aiter_raw``, then ``aclose``). httpx errors are the caller's to translate."""
        if self._wire is not None:
            return await self._send_direct(self._wire, method, path, json, timeout)
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self._base + path)
            if len(self._urls) < _PARSED_URLS:  # a file download's path is seen once
                self._urls[path] = url
        limits = self._limits if timeout is None else {"timeout": httpx.Timeout(timeout).as_dict()}
        if json is None:
            head, body = httpx.Headers(self._bare_head), b""
        else:  # the body httpx's json= makes, with the head above: a third of its cost
            body = _encode(json)
            head = httpx.Headers(self._json_head)
        if body or method in ("POST", "PUT", "PATCH"):  # as httpx.Request says it
            head["Content-Length"] = str(len(body))
        request = httpx.Request(
            method, url, headers=head, stream=httpx.ByteStream(body), extensions=limits
        )
        request.read()  # the body is whole: transports see it as content, not as a stream
        return await self._transport.handle_async_request(request)

    async def _send_direct(
        self,
        wire: Wire | FaultTransport,
        method: str,
        path: str,
        json: Any,
        timeout: float | None,
        whole: bool = False,
    ) -> Response:
        """:meth:`_open` on a :class:`~.transport.Wire`: no ``httpx.Request`` in between
        (``whole``: the body read too)."""
        url = self._wire_urls.get(path)
        if url is None:
            url = URL(self._base + path)
            if len(self._wire_urls) < _PARSED_URLS:
                self._wire_urls[path] = url
        limits = self._wire_timeout if timeout is None else client_timeout(httpx.Timeout(timeout))
        if json is None:
            return await wire.send(method, url, self._wire_bare, b"", limits, whole)
        body = _encode(json)
        return await wire.send(method, url, self._wire_json, body, limits, whole)

    def _json(self, response: Response) -> Any:
        """The JSON body, or UpstreamError when the upstream answered something else."""
        try:
            return orjson.loads(response.content)  # UTF-8, as RFC 8259 has JSON on the wire
        except ValueError:
            raise UpstreamError(
                self.dependency,
                f"answered HTTP {response.status_code} with a body that is not JSON",
                status=response.status_code if response.status_code >= 400 else 502,
                code="garbage",
            ) from None

    def _transport_error(self, exc: httpx.TransportError) -> UpstreamError:
        """What a transport failure is, as an UpstreamError (no URL, scrubbed): a connection
        that failed is named (``network``), a timeout is one, anything else is unreachable."""
        named = connection_failure(exc)
        if named is not None:
            return UpstreamError(self.dependency, named, code="network")
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamError(self.dependency, f"timed out ({type(exc).__name__})")
        reason = self._scrub(str(exc)) or type(exc).__name__
        return UpstreamError(self.dependency, f"unreachable: {reason}", code="network")
