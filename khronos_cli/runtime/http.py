"""The public HTTP port (127.0.0.1:18789 by default): seed parity plus health, readiness, metrics.

::

    GET  /breakers/status   {name: snapshot}: the same JSON as `khronos breakers --json`
    GET  /limiter/stats     {name: snapshot}: the same JSON as `khronos limiter --json`
    POST /chat              {"message": str, "user"?: str | int} -> {"reply": str}; each user
                            (else each client address) is its own group in the anthropic
                            limiter; 503 + Retry-After while anthropic-api is open (no fallback)
    POST /messages          {"chat_id": int64, "text": str} -> 202 once durably queued; 429 +
                            Retry-After (computed from the queue) when that chat's queue is full;
                            503 + Retry-After while the database breaker is open
    GET  /health            alive (200 while the process serves at all, saturated or not)
                            (/health, /ready and /metrics also on ``[http] probe_port`` alone)
    GET  /ready             ready (503 with {"ready": false} while starting or stopping)

**During a stop** (step 1, :meth:`PublicServer.drain`) the port stays open and answers: ``/ready``
503, ``/health`` and the reads 200, and every ``POST`` (new work) a 503 with ``Retry-After``
and ``Connection: close``. The port closes at step 7 (:meth:`PublicServer.aclose`), so a probe
sees "not ready" for the whole stop rather than a refused connection.
    GET  /metrics           Prometheus text format
    POST /telegram/webhook  Telegram's deliveries (webhook mode), with the secret-token header

**The write endpoints take a bearer token.** With ``KHRONOS_HTTP_TOKEN`` set, ``POST /chat``
and ``POST /messages`` need ``Authorization: Bearer <token>`` (compared in constant time; a 401
JSON error otherwise, before the body is read). Beyond loopback the token is required: the
worker refuses to start without it (``preflight.check_public_port``). Probes and reads need none.

**Every input is checked before any guard** (``control.inputs``): JSON at most 32 levels deep
and 256 KiB, finite numbers, int64 integers, Unicode text (no lone surrogate); ``text`` and
``message`` non-blank and at most 4,096 code points, ``user`` at most 128. A bad request is a 400
naming the field (``{"error": {"status", "message", "field"}}``) and never reaches a breaker, a
limiter or SQLite. Wrong methods, unknown paths, oversize bodies: a 4xx JSON error.

**The webhook acknowledges poison.** An update that is not a JSON object, has no int64
``update_id``, or holds what no Telegram update holds (see above) is answered 200 — Telegram
redelivers anything else for ever — logged once (then counted) and counted in
``khronos status`` (``updates_rejected``). An update that could not be journaled *now* (the
database breaker open) is a 503 + Retry-After: Telegram keeps it and sends it again. The secret
is compared in constant time and never logged.

**Bounded resources.** A request head must arrive within :data:`HEADER_TIMEOUT` of the connection
(or of the previous answer on a kept-alive one; aiohttp's keep-alive timer) and its body within
``READ_TIMEOUT`` (else 408), so a slow client holds nothing for long; the number of connections is
capped and ``/health`` answers past the cap (see :mod:`.listener`). A client that hangs up early,
and ``accept()`` failures, are logged once and counted, never a traceback per connection.
"""

from __future__ import annotations

import hmac
import logging
import math
from typing import Any, Protocol

from aiohttp import web

from khronos_cli.control import inputs
from khronos_cli.control.inputs import FieldError
from khronos_cli.control.jsonapi import dumps, error, json_errors, read_body, read_object
from khronos_cli.control.protocol import error_body
from khronos_cli.control.repeats import Repeats
from khronos_cli.errors import (
    BreakerError,
    CircuitOpenError,
    JobDroppedError,
    KhronosError,
)
from khronos_cli.runtime.listener import (
    OVERFLOW_TIMEOUT,
    AcceptErrors,
    CappedSite,
    connection_caps,
)
from khronos_cli.settings import Settings

__all__ = ["HEADER_TIMEOUT", "MAX_TEXT", "WEBHOOK_PATH", "PublicAPI", "PublicServer"]

logger = logging.getLogger("khronos.http")

MAX_BODY = 256 * 1024
MAX_TEXT = 4096  # Telegram's own limit for one message, in code points
MAX_USER = 128
HEADER_TIMEOUT = 5.0  # seconds for a request head (and for an idle kept-alive connection)
LINGER = 1.0  # seconds to drain an unread body before closing (aiohttp's default: 10)
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALIVE = {"status": "alive"}


class PublicAPI(Protocol):
    """What the worker offers the public port."""

    @property
    def ready(self) -> bool: ...
    @property
    def webhook_secret(self) -> str | None: ...
    def breakers(self) -> dict[str, Any]: ...
    def limiters(self) -> dict[str, Any]: ...
    def metrics(self) -> bytes: ...
    async def chat(self, message: str, *, user: str) -> dict[str, str]: ...
    async def send(self, chat_id: int, text: str) -> dict[str, Any]: ...
    async def webhook(self, update: dict[str, Any]) -> None: ...


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds or 1)))}


def _user(body: dict[str, Any], remote: str | None) -> str:
    """The anthropic limiter's group for a /chat call: ``user``, else the client's address."""
    value = body.get("user")
    if value is None:
        return remote or "anonymous"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(inputs.integer(body, "user"))
    if not isinstance(value, str):
        raise FieldError("user", "'user' must be a string or an integer")
    return str(inputs.text(body, "user", most=MAX_USER))


def _unavailable(exc: BreakerError) -> web.Response:
    retry_in = exc.retry_in if isinstance(exc, CircuitOpenError) else None
    body = {**error_body(503, str(exc)), "breaker": exc.breaker, "retry_in": retry_in}
    return web.json_response(body, status=503, headers=_retry_after(retry_in))


class PublicServer:
    """aiohttp on ``host:port`` (port 0 picks a free one; :attr:`port` tells which)."""

    def __init__(
        self,
        api: PublicAPI,
        host: str = "127.0.0.1",
        port: int = 18789,
        *,
        token: str = "",
        probe_port: int | None = None,
    ) -> None:
        self.api = api
        self.host = host
        self.port = port
        self.probe_port = probe_port
        self._token = token.encode()
        self._probe: web.AppRunner | None = None
        self.updates_rejected = 0
        self.rejected: dict[str, int] = {}  # 429s (a full queue) by endpoint, for /metrics
        self.repeats = Repeats(logger)
        self._accept_errors = AcceptErrors(self.repeats)
        self._runner: web.AppRunner | None = None
        self._overflow: web.Server | None = None
        self.draining = False

    def drain(self) -> None:
        """Take no new work (every POST is a 503); the reads and /ready still answer."""
        self.draining = True

    async def startup(self) -> None:
        @web.middleware
        async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
            if self.draining and request.method == "POST":
                message = "the bot is stopping: no new work; retry after its restart"
                response = error(503, message, headers=_retry_after(5))
                response.force_close()
                return response
            answer: web.StreamResponse = await handler(request)
            return answer

        middlewares = [json_errors(self.repeats), gate]
        app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
        app.add_routes(
            [
                web.get("/breakers/status", self._breakers),
                web.get("/limiter/stats", self._limiters),
                web.post("/chat", self._chat),
                web.post("/messages", self._messages),
                web.get("/health", self._health),
                web.get("/ready", self._ready),
                web.get("/metrics", self._metrics),
                web.post(WEBHOOK_PATH, self._webhook),
            ]
        )
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            keepalive_timeout=HEADER_TIMEOUT,
            lingering_time=LINGER,
        )
        await self._runner.setup()
        self._overflow = web.Server(
            self._saturated, access_log=None, keepalive_timeout=OVERFLOW_TIMEOUT, lingering_time=0
        )
        # A deep accept queue: a burst of a thousand callers must wait, not be reset.
        site = CappedSite(
            self._runner,
            self.host,
            self.port,
            limits=connection_caps(),
            overflow=self._overflow,
            backlog=1024,
        )
        try:
            await site.start()
        except OSError:
            await self.aclose()
            raise
        self._accept_errors.install()
        self.port = int(self._runner.addresses[0][1])
        if self.probe_port is not None:
            await self._start_probe(self.probe_port)

    @classmethod
    def for_settings(cls, api: PublicAPI, settings: Settings) -> PublicServer:
        return cls(
            api,
            settings.http_host,
            settings.http_port,
            token=settings.http_token.reveal(),
            probe_port=settings.http_probe_port,
        )

    async def _start_probe(self, port: int) -> None:
        """``/health``, ``/ready`` and ``/metrics`` on a port of their own (Kubernetes probes
        and scrapes), so the public port's caps and token never stand in their way."""
        probe = web.Application(middlewares=[json_errors(self.repeats)])
        probe.add_routes(
            [
                web.get("/health", self._health),
                web.get("/ready", self._ready),
                web.get("/metrics", self._metrics),
            ]
        )
        self._probe = web.AppRunner(
            probe, access_log=None, handle_signals=False, keepalive_timeout=HEADER_TIMEOUT
        )
        await self._probe.setup()
        try:
            await web.TCPSite(self._probe, self.host, port, backlog=128).start()
        except OSError:
            await self.aclose()
            raise
        self.probe_port = int(self._probe.addresses[0][1])

    async def aclose(self) -> None:
        """Stop listening, close idle keep-alive connections, let busy requests finish (2 s)."""
        runner, self._runner = self._runner, None
        overflow, self._overflow = self._overflow, None
        probe, self._probe = self._probe, None
        self._accept_errors.uninstall()
        if runner is not None:
            await runner.cleanup()
        if probe is not None:
            await probe.cleanup()
        if overflow is not None:
            overflow.pre_shutdown()
            await overflow.shutdown(0.5)
        self.repeats.flush()

    async def _breakers(self, request: web.Request) -> web.Response:
        return web.json_response(self.api.breakers(), dumps=dumps)

    async def _limiters(self, request: web.Request) -> web.Response:
        return web.json_response(self.api.limiters(), dumps=dumps)

    async def _health(self, request: web.BaseRequest) -> web.Response:
        return web.json_response(ALIVE)

    async def _saturated(self, request: web.BaseRequest) -> web.StreamResponse:
        """The overflow's only handler: /health answers, anything else is 503, then close."""
        if request.method == "GET" and request.path == "/health":
            response = await self._health(request)
        else:
            self.repeats.note(
                "saturated", "the public port is at its connection limit: new requests get 503"
            )
            message = "the server is at its connection limit; retry in a moment"
            response = error(503, message, headers=_retry_after(1))
        response.force_close()
        return response

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self.api.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.api.metrics(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    def _denied(self, request: web.Request) -> web.Response | None:
        """The 401 for a write request without the bearer token (None: let it through)."""
        if not self._token:
            return None
        given = request.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token
        ):
            return None
        problem = "wrong bearer token" if given else "no bearer token"
        return error(
            401,
            f"{problem}: send Authorization: Bearer <KHRONOS_HTTP_TOKEN>",
            headers={"WWW-Authenticate": 'Bearer realm="khronos"'},
        )

    async def _chat(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await read_object(request)
        message = inputs.text(body, "message", most=MAX_TEXT)
        assert message is not None
        user = _user(body, request.remote)
        try:
            reply = await self.api.chat(message, user=f"chat:{user}")
        except JobDroppedError as exc:
            return self._refused(request, exc)
        if reply["answered_by"] == "fallback":  # neither model answered: say so, and when
            trial = self.api.breakers().get("anthropic-api", {}).get("next_trial_in")
            body = {**error_body(503, "no model answered; try again later"), **reply}
            return web.json_response(body, status=503, headers=_retry_after(trial))
        return web.json_response(reply)

    async def _messages(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await read_object(request)
        chat_id = inputs.integer(body, "chat_id")
        text = inputs.text(body, "text", most=MAX_TEXT)
        assert chat_id is not None and text is not None
        try:
            queued = await self.api.send(chat_id, text)
        except JobDroppedError as exc:
            return self._refused(request, exc)
        except BreakerError as exc:  # the database breaker: nothing was queued
            return _unavailable(exc)
        return web.json_response({"queued": True, **queued}, status=202)

    def _refused(self, request: web.Request, exc: JobDroppedError) -> web.Response:
        """A 429 for an enqueue a full queue refused, counted by endpoint."""
        self.rejected[request.path] = self.rejected.get(request.path, 0) + 1
        return error(429, str(exc), headers=_retry_after(exc.retry_after))

    async def _webhook(self, request: web.Request) -> web.Response:
        secret = self.api.webhook_secret
        if secret is None:
            raise web.HTTPNotFound(reason="webhook mode is off")
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return error(403, "wrong or missing secret token")
        try:
            update = await self._update(request)
        except FieldError as exc:
            self.updates_rejected += 1
            self.repeats.note(
                "poison update",
                f"webhook: acknowledged an update nobody can process, so that Telegram does not "
                f"send it again: {exc}",
            )
            return web.json_response({"ok": True, "rejected": str(exc)})
        try:
            await self.api.webhook(update)
        except KhronosError as exc:  # not journaled now: Telegram must deliver it again later
            logger.warning("webhook: update %s not recorded yet: %s", update["update_id"], exc)
            return error(503, "could not record the update; retry later", headers=_retry_after(5))
        return web.json_response({})

    async def _update(self, request: web.Request) -> dict[str, Any]:
        """The delivered update; FieldError when it is poison (what Telegram never sends)."""
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            raise FieldError(None, f"the update is larger than {MAX_BODY // 1024} KiB") from None
        update = inputs.loads(raw)
        if not isinstance(update, dict):
            raise FieldError(None, "the update is not a JSON object")
        inputs.integer(update, "update_id")
        return update
