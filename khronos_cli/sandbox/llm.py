"""Loopback stand-ins for the LLM APIs: Anthropic Messages and OpenAI (chat + transcription).

Both answer the real request and response shapes with a deterministic reply that ties back to the
user's last message — ``"anthropic echo: <text>"`` / ``"openai echo: <text>"``
(:meth:`LLMStandIn.reply_for`) — so a test can tell which provider answered which message. A
directive word in that message (``#long``, ``#blocks``, ``#refuse``, ``#empty``) asks for the
other shapes real answers take: :mod:`.replies` has the table.

**Latency grows with the answer**, as a real model's does: an answer takes the base ``latency``
plus ``token_latency`` seconds per output token (words, :func:`~.replies.tokens`; 0 by default).

Every stand-in has one *mode*, settable from Python (:meth:`LLMStandIn.set_mode`) and over HTTP
(``POST /_sandbox/mode`` with set_mode's fields as JSON — missing ones take their defaults — plus
optional ``latency`` and ``token_latency``; ``GET /_sandbox/stats`` reads them back with the
counters):

============ ==============================================================================
ok           answer after the base ``latency`` (+ ``token_latency`` per output token)
down         close the connection without an answer (the client sees a transport error)
slow         answer after ``latency`` + the mode's ``delay`` seconds
hang         never answer (not even the headers), until the client gives up or the stand-in closes
stall        a streamed answer sends its headers and opening event (Anthropic ``message_start``,
             OpenAI's first chunk), then nothing more, as a stream that stalls mid-way; a
             non-streamed answer hangs
stream_error a streamed answer breaks half-way with the provider's error event (the ``status``
             picks it, as in ``errors``: 529 ``overloaded_error`` ...); a non-streamed one is
             answered as in ``errors``
errors       answer ``status`` (503 default) with the provider's error JSON and the real headers:
             a 429 carries ``retry-after`` (``retry_after`` seconds) and ``retry-after-ms``; a 529
             ``overloaded_error`` and other 5xx carry none; with ``should_retry`` set, every error
             carries ``x-should-retry: true|false`` (the SDKs obey it)
garbage      answer 200 with a body that is not JSON
============ ==============================================================================

Both answer ``"stream": true`` with Server-Sent Events (:mod:`.streams`), their tokens paced by
``token_latency``.

A mode can be limited to the next ``count`` requests, after which the stand-in is ``ok`` again
(a blip). Faults apply before authentication, as a broken upstream would. Counters:
:attr:`LLMStandIn.requests` per endpoint and :attr:`LLMStandIn.outcomes` per mode served;
:attr:`LLMStandIn.calls` keeps the last request bodies.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from aiohttp import web

from khronos_cli.sandbox._server import LOOPBACK, LoopbackServer
from khronos_cli.sandbox.replies import tokens
from khronos_cli.sandbox.streams import EventStream

__all__ = ["LLMMode", "LLMStandIn", "ModeSettings", "tokens"]

LLMMode = Literal["ok", "down", "slow", "hang", "stall", "stream_error", "errors", "garbage"]
MODES: tuple[str, ...] = get_args(LLMMode)
GARBAGE = b'<html><body><h1>502 Bad Gateway</h1></body></html>\n{"truncated": '
Json = dict[str, Any]


class APIError(Exception):
    """An error answer, rendered in the provider's own JSON shape by ``_error_body``."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


@dataclass
class ModeSettings:
    """The current fault mode and its parameters."""

    mode: LLMMode = "ok"
    delay: float = 1.0  # slow: seconds added to the base latency
    status: int = 503  # errors: the HTTP status
    retry_after: int = 1  # errors with 429: the retry-after header
    count: int | None = None  # requests left in this mode; None: until changed
    should_retry: bool | None = None  # errors: the x-should-retry header; None: not sent

    def to_json(self) -> Json:
        return asdict(self)


class LLMStandIn(LoopbackServer):
    """Shared mode handling, counters and admin API of the LLM stand-ins."""

    provider = "llm"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        token_latency: float = 0.0,
        reply: Callable[[str], str] | None = None,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.name = self.provider
        self.api_key = api_key  # None: any non-empty key is accepted
        self.latency = latency
        self.token_latency = token_latency  # seconds per output token, on top of latency
        self.settings = ModeSettings()
        self.requests: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.calls: deque[tuple[str, Json]] = deque(maxlen=1000)
        self._reply = reply
        self._ids = itertools.count(1)

    # -- Python API -------------------------------------------------------------------------------

    def set_mode(
        self,
        mode: LLMMode = "ok",
        *,
        delay: float = 1.0,
        status: int = 503,
        retry_after: int = 1,
        count: int | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Serve every following request (or the next ``count``) in ``mode``."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        if not 400 <= status <= 599:
            raise ValueError(f"errors mode needs an HTTP error status, got {status}")
        if should_retry is not None and not isinstance(should_retry, bool):
            raise ValueError(f"should_retry must be true, false or null, got {should_retry!r}")
        self.settings = ModeSettings(mode, delay, status, retry_after, count, should_retry)

    @property
    def mode(self) -> LLMMode:
        return self.settings.mode

    def reply_for(self, text: str) -> str:
        """The reply this stand-in gives to a last user message ``text``."""
        return self._reply(text) if self._reply else f"{self.provider} echo: {text}"

    def stats(self) -> Json:
        return {
            "provider": self.provider,
            "latency": self.latency,
            "token_latency": self.token_latency,
            **self.settings.to_json(),
            "requests": dict(self.requests),
            "outcomes": dict(self.outcomes),
        }

    # -- for subclasses ---------------------------------------------------------------------------

    def _error_body(self, error: APIError) -> Json:
        raise NotImplementedError

    def _check_auth(self, request: web.Request) -> None:
        """Raise :class:`APIError` when the request's credentials are missing or wrong."""
        raise NotImplementedError

    def _next_id(self) -> int:
        return next(self._ids)

    async def _serve(
        self,
        request: web.Request,
        endpoint: str,
        answer: Callable[[web.Request], Awaitable[tuple[web.StreamResponse | EventStream, int]]],
    ) -> web.StreamResponse:
        """Count the request, play the current mode, then authenticate and ``answer`` it (the
        answer comes with its output tokens, which cost ``token_latency`` each; a streamed one
        is played event by event)."""
        self.requests[endpoint] += 1
        settings = self.settings
        if settings.count is not None:
            settings.count -= 1
            if settings.count <= 0:
                self.settings = ModeSettings()
        self.outcomes[settings.mode] += 1
        if await self._pause(self.latency):
            return self._drop_connection(request)
        if settings.mode == "down":
            return self._drop_connection(request)
        if settings.mode == "hang":
            await self._pause(None)
            return self._drop_connection(request)
        if settings.mode == "garbage":
            return web.Response(body=GARBAGE, content_type="application/json")
        if settings.mode == "errors":
            return self._error_response(settings)
        if settings.mode == "slow" and await self._pause(settings.delay):
            return self._drop_connection(request)
        try:
            self._check_auth(request)
            response, output_tokens = await answer(request)
        except APIError as exc:
            return web.json_response(self._error_body(exc), status=exc.status)
        if isinstance(response, EventStream):
            return await self._play(request, response, settings)
        if settings.mode == "stall":
            await self._pause(None)
            return self._drop_connection(request)
        if settings.mode == "stream_error":
            return self._error_response(settings)
        if await self._pause(output_tokens * self.token_latency):
            return self._drop_connection(request)
        return response

    async def _play(
        self, request: web.Request, stream: EventStream, settings: ModeSettings
    ) -> web.StreamResponse:
        """Send ``stream``'s events, each token ``token_latency`` after the one before (those
        due together go in one write); ``stall`` stops after the opening, ``stream_error`` breaks
        half-way with the provider's error event."""
        events = stream.events
        if settings.mode == "stream_error":
            events = stream.broken(self._error_body(self._fault(settings)[0]))
        headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        response = web.StreamResponse(headers={**headers, **stream.headers})
        try:
            await response.prepare(request)
            if settings.mode == "stall":
                await response.write(b"".join(data for data, _ in events[: stream.opening]))
                await self._pause(None)
                return self._drop_connection(request)
            loop = asyncio.get_running_loop()
            latency, start, sent = self.token_latency, loop.time(), 0
            batch: list[bytes] = []
            for data, token in events:
                if token and latency > 0:
                    sent += 1
                    wait = start + sent * latency - loop.time()
                    if wait > 0:
                        await response.write(b"".join(batch))
                        batch = []
                        if await self._pause(wait):
                            return self._drop_connection(request)
                batch.append(data)
            await response.write(b"".join(batch))
            await response.write_eof()
        except ConnectionError:  # the client went away mid-stream
            pass
        return response

    def _error_response(self, settings: ModeSettings) -> web.Response:
        error, headers = self._fault(settings)
        return web.json_response(self._error_body(error), status=settings.status, headers=headers)

    def _fault(self, settings: ModeSettings) -> tuple[APIError, dict[str, str]]:
        """The error the ``errors`` and ``stream_error`` modes answer, with its headers."""
        status = settings.status
        headers: dict[str, str] = {}
        if status == 429:
            error = APIError(429, "rate_limit_error", "Rate limit exceeded (sandbox fault)")
            headers["retry-after"] = str(settings.retry_after)
            headers["retry-after-ms"] = str(settings.retry_after * 1000)
        elif status == 529:  # no retry-after: the SDKs back off on their own
            error = APIError(529, "overloaded_error", "Overloaded (sandbox fault)")
        elif status >= 500:
            error = APIError(status, "api_error", "Service unavailable (sandbox)")
        else:
            error = APIError(status, "invalid_request_error", "Sandbox fault")
        if settings.should_retry is not None:
            headers["x-should-retry"] = "true" if settings.should_retry else "false"
        return error, headers

    async def _json_body(self, request: web.Request, endpoint: str) -> Json:
        try:
            body = await request.json()
        except ValueError:
            raise APIError(400, "invalid_request_error", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "invalid_request_error", "the body must be a JSON object")
        self.calls.append((endpoint, body))
        return body

    # -- admin API --------------------------------------------------------------------------------

    def _admin_routes(self, app: web.Application) -> None:
        app.router.add_get("/_sandbox/stats", self._admin_stats)
        app.router.add_post("/_sandbox/mode", self._admin_mode)

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _admin_mode(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            for key in ("latency", "token_latency"):
                if key in body:
                    seconds = float(body.pop(key))
                    if seconds < 0:
                        raise ValueError(f"{key} must be zero or more seconds")
                    setattr(self, key, seconds)
            if body:
                self.set_mode(**body)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.stats())


def streamed(body: Json) -> bool:
    """The request's ``stream`` flag (absent: false); anything but a boolean is a 400."""
    value = body.get("stream", False)
    if not isinstance(value, bool):
        raise APIError(400, "invalid_request_error", "stream: Input should be a valid boolean")
    return value


def last_user_text(messages: list[Any]) -> str:
    """The text of the last ``user`` message (string content or text blocks/parts)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def now() -> int:
    return int(time.time())
