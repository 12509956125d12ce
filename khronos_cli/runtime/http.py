"""The public HTTP port (127.0.0.1:18789 by default): seed parity plus health, readiness, metrics.

::

    GET  /breakers/status   {name: snapshot}: the same JSON as `khronos breakers --json`
    GET  /limiter/stats     {name: snapshot}: the same JSON as `khronos limiter --json`
    POST /chat              {"message": str, "user"?: id} -> {"reply": str}; each user (else
                            each client address) is its own group in the anthropic limiter;
                            503 + Retry-After while anthropic-api is open (no fallback here)
    POST /messages          {"chat_id": int, "text": str} -> 202 once durably queued; 429 +
                            Retry-After (computed from the queue) when that chat's queue is full
    GET  /health            alive (200 while the process serves at all)
    GET  /ready             ready (503 with {"ready": false} while starting or stopping)
    GET  /metrics           Prometheus text format
    POST /telegram/webhook  Telegram's deliveries (webhook mode), with the secret-token header

Bad JSON, missing or mistyped fields, oversize bodies, wrong methods: a 4xx JSON error, and the
server keeps serving. The webhook secret is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import math
from typing import Any, Protocol

from aiohttp import web

from khronos_cli.control.jsonapi import dumps, error, json_errors, read_object
from khronos_cli.errors import CallTimeoutError, CircuitOpenError, JobDroppedError, UpstreamError

__all__ = ["MAX_TEXT", "WEBHOOK_PATH", "PublicAPI", "PublicServer"]

MAX_BODY = 256 * 1024
MAX_TEXT = 4096  # Telegram's own limit for one message
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class PublicAPI(Protocol):
    """What the worker offers the public port."""

    @property
    def ready(self) -> bool: ...
    @property
    def webhook_secret(self) -> str | None: ...
    def breakers(self) -> dict[str, Any]: ...
    def limiters(self) -> dict[str, Any]: ...
    def metrics(self) -> bytes: ...
    async def chat(self, message: str, *, user: str) -> str: ...
    async def send(self, chat_id: int, text: str) -> dict[str, Any]: ...
    async def webhook(self, update: dict[str, Any]) -> None: ...


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds or 1)))}


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{key!r} is longer than {MAX_TEXT} characters")
    return value


class PublicServer:
    """aiohttp on ``host:port`` (port 0 picks a free one; :attr:`port` tells which)."""

    def __init__(self, api: PublicAPI, host: str = "127.0.0.1", port: int = 18789) -> None:
        self.api = api
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def startup(self) -> None:
        app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
        app.add_routes([
            web.get("/breakers/status", self._breakers),
            web.get("/limiter/stats", self._limiters),
            web.post("/chat", self._chat),
            web.post("/messages", self._messages),
            web.get("/health", self._health),
            web.get("/ready", self._ready),
            web.get("/metrics", self._metrics),
            web.post(WEBHOOK_PATH, self._webhook),
        ])  # fmt: skip
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        # A deep accept queue: a burst of a thousand callers must wait, not be reset.
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, backlog=1024)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        """Stop listening, close idle keep-alive connections, let busy requests finish (2 s)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _breakers(self, request: web.Request) -> web.Response:
        return web.json_response(self.api.breakers(), dumps=dumps)

    async def _limiters(self, request: web.Request) -> web.Response:
        return web.json_response(self.api.limiters(), dumps=dumps)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self.api.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.api.metrics(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def _chat(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        message = _text(body, "message")
        user = body.get("user", request.remote or "anonymous")
        if isinstance(user, bool) or not isinstance(user, str | int) or len(str(user)) > 128:
            raise ValueError("'user' must be a string or an integer (at most 128 characters)")
        try:
            reply = await self.api.chat(message, user=f"chat:{user}")
        except CircuitOpenError as exc:
            body = {"error": {"status": 503, "message": str(exc)}, "breaker": exc.breaker,
                    "retry_in": exc.retry_in}  # fmt: skip
            return web.json_response(body, status=503, headers=_retry_after(exc.retry_in))
        except JobDroppedError as exc:
            return error(429, str(exc), headers=_retry_after(exc.retry_after))
        except CallTimeoutError as exc:
            return error(504, str(exc))
        except UpstreamError as exc:
            return error(502, str(exc), headers=_retry_after(exc.retry_after))
        return web.json_response({"reply": reply})

    async def _messages(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        chat_id = body.get("chat_id")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int):
            raise ValueError("'chat_id' must be an integer")
        text = _text(body, "text")
        try:
            queued = await self.api.send(chat_id, text)
        except JobDroppedError as exc:
            return error(429, str(exc), headers=_retry_after(exc.retry_after))
        return web.json_response({"queued": True, **queued}, status=202)

    async def _webhook(self, request: web.Request) -> web.Response:
        secret = self.api.webhook_secret
        if secret is None:
            raise web.HTTPNotFound(reason="webhook mode is off")
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return error(403, "wrong or missing secret token")
        update = await read_object(request)
        if not isinstance(update.get("update_id"), int):
            raise ValueError("'update_id' must be an integer")
        try:
            await self.api.webhook(update)
        except Exception:  # not journaled: Telegram must deliver it again later
            return error(503, "could not record the update; retry later", headers=_retry_after(5))
        return web.json_response({})
