"""The sandbox Telegram's admin API: drive and inspect the stand-in from another process.

It lives under ``/_sandbox/``, a path no Bot API URL (``/bot<token>/...``, ``/file/bot...``) can
take, and speaks plain JSON (errors: 400 ``{"error": "..."}``):

=======  ===========================  =========================================================
GET      ``/_sandbox/stats``          counters: pending updates, deliveries, 429s, requests, ...
POST     ``/_sandbox/messages``       ``{"chat_id", "user_id"?, "text"}`` or ``{..., "voice":
                                      transcript}`` -> ``{"message_id", "update_id"}``
GET      ``/_sandbox/messages``       pushed user messages, ``?after=N`` skips the first N
GET      ``/_sandbox/deliveries``     messages the bot sent, ``?after=N`` skips the first N
GET      ``/_sandbox/ledger``         the :class:`~khronos_cli.sandbox.ledger.Ledger` report
POST     ``/_sandbox/failure``        ``{"mode", "methods"?, "status"?, "count"?}``
POST     ``/_sandbox/flood``          ``{"per_chat"?, "per_group"?, "per_bot"?}``: ``"1/s"`` or null
=======  ===========================  =========================================================

Lists answer ``{"items": [...], "next": N}``; pass ``next`` back as ``after`` to read only what is
new. The admin API needs no token: it listens on loopback only, like the whole sandbox.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

from khronos_cli.config import parse_rate
from khronos_cli.errors import ConfigError
from khronos_cli.sandbox.ledger import FALLBACK_TEXT, Ledger

if TYPE_CHECKING:
    from khronos_cli.sandbox.telegram import TelegramStandIn

__all__ = ["ADMIN_PREFIX", "admin_routes"]

ADMIN_PREFIX = "/_sandbox"


class _BadRequest(Exception):
    pass


def admin_routes(telegram: TelegramStandIn, app: web.Application) -> None:
    """Add the admin endpoints of ``telegram`` to ``app``."""
    admin = _Admin(telegram)
    for method, path, handler in (
        ("GET", "/stats", admin.stats),
        ("POST", "/messages", admin.push),
        ("GET", "/messages", admin.messages),
        ("GET", "/deliveries", admin.deliveries),
        ("GET", "/ledger", admin.ledger),
        ("POST", "/failure", admin.failure),
        ("POST", "/flood", admin.flood),
    ):
        app.router.add_route(method, ADMIN_PREFIX + path, _json_errors(handler))


def _json_errors(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            body: object = await handler(request)
        except _BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(body)

    return wrapped


class _Admin:
    def __init__(self, telegram: TelegramStandIn) -> None:
        self.telegram = telegram

    async def stats(self, request: web.Request) -> object:
        return self.telegram.stats()

    async def push(self, request: web.Request) -> object:
        body = await _body(request)
        chat_id = _integer(body, "chat_id")
        user_id = _integer(body, "user_id") if "user_id" in body else chat_id
        if isinstance(body.get("voice"), str):
            message_id = self.telegram.push_voice(chat_id, user_id, body["voice"])
        elif isinstance(body.get("text"), str) and body["text"]:
            message_id = self.telegram.push_text(chat_id, user_id, body["text"])
        else:
            raise _BadRequest('expected "text" (a non-empty string) or "voice" (a transcript)')
        return {"message_id": message_id, "update_id": self.telegram.pushed[-1].update_id}

    async def messages(self, request: web.Request) -> object:
        after = _after(request)
        items = [message.to_json() for message in self.telegram.pushed[after:]]
        return {"items": items, "next": after + len(items)}

    async def deliveries(self, request: web.Request) -> object:
        after = _after(request)
        items = [delivery.to_json() for delivery in self.telegram.deliveries[after:]]
        return {"items": items, "next": after + len(items)}

    async def ledger(self, request: web.Request) -> object:
        fallback = request.query.get("fallback_text", FALLBACK_TEXT)
        ledger = Ledger.from_records(
            self.telegram.pushed, self.telegram.deliveries, fallback_text=fallback
        )
        return ledger.report().to_json()

    async def failure(self, request: web.Request) -> object:
        body = await _body(request)
        methods = body.get("methods")
        if methods is not None and not (
            isinstance(methods, list) and all(isinstance(m, str) for m in methods)
        ):
            raise _BadRequest('"methods" must be a list of method names or null')
        count = _integer(body, "count") if body.get("count") is not None else None
        status = _integer(body, "status") if "status" in body else 502
        try:
            self.telegram.set_failure(
                body.get("mode", "ok"), methods=methods, status=status, count=count
            )
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        return self.telegram.failure.to_json()

    async def flood(self, request: web.Request) -> object:
        body = await _body(request)
        changes: dict[str, Any] = {}
        for key in ("per_chat", "per_group", "per_bot"):
            if key not in body:
                continue
            try:
                changes[key] = None if body[key] is None else parse_rate(body[key], key=key)
            except ConfigError as exc:
                raise _BadRequest(str(exc)) from None
        flood = self.telegram.flood
        flood.limits = dataclasses.replace(flood.limits, **changes)
        return flood.limits.to_json()


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _integer(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadRequest(f'"{key}" must be an integer, got {value!r}')
    return value


def _after(request: web.Request) -> int:
    raw = request.query.get("after", "0")
    if not raw.isdigit():
        raise _BadRequest(f'"after" must be a whole number, got {raw!r}')
    return int(raw)
