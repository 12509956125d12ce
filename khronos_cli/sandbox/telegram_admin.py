"""The sandbox Telegram's admin API: drive and inspect the stand-in from another process.

It lives under ``/_sandbox/``, a path no Bot API URL (``/bot<token>/...``, ``/file/bot...``) can
take, and speaks plain JSON (errors: 400 ``{"error": "..."}``). Reading:

=======  ===========================  =========================================================
GET      ``/_sandbox/stats``          counters: pending updates, deliveries, 429s, refusals, ...
GET      ``/_sandbox/messages``       what users did (:class:`UserMessage` items), ``?after=N``
GET      ``/_sandbox/deliveries``     messages the bot sent, ``?after=N`` skips the first N
GET      ``/_sandbox/operator``       alerts the bot sent to the operator chat (``OPERATOR_CHAT``:
                                      not deliveries, not in the ledger), ``?after=N``
GET      ``/_sandbox/ledger``         the :class:`~khronos_cli.sandbox.ledger.Ledger` report
GET      ``/_sandbox/chats``          ``{"migrations": {old: new}, "blocks": {user: [[since,
                                      until]]}, "blocked": [user, ...]}``
=======  ===========================  =========================================================

Steering (each answers what it did; ``user_id`` defaults to ``chat_id`` or the group's owner):

=======  ===========================  =========================================================
POST     ``/_sandbox/failure``        ``{"mode", "methods"?, "status"?, "count"?}``
POST     ``/_sandbox/flood``          ``{"per_chat"?, "per_group"?, "per_bot"?}``: ``"1/s"`` or null
POST     ``/_sandbox/flood/force``    ``{"chat_id", "retry_after", "seconds"}``: every send to the
                                      chat is a 429 with that retry_after for that long
POST     ``/_sandbox/block``          ``{"user_id", "blocked": true|false}`` -> ``{"update_id"}``
POST     ``/_sandbox/migrate``        ``{"chat_id", "user_id"?}`` -> ``{"chat_id",
                                      "migrate_to_chat_id"}``
=======  ===========================  =========================================================

Users' actions (:mod:`.telegram_admin_pushes`): ``POST /_sandbox/messages``,
``/_sandbox/service`` and ``/_sandbox/updates``. Lists answer ``{"items": [...], "next": N}``;
pass ``next`` back as ``after`` to read only what is new. The admin API needs no token: it listens
on loopback only, like the whole sandbox.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

from khronos_cli.config import parse_rate
from khronos_cli.errors import ConfigError
from khronos_cli.sandbox.ledger import FALLBACK_TEXT, Ledger
from khronos_cli.sandbox.telegram_admin_pushes import BadRequest, Pushes, body_of, integer

if TYPE_CHECKING:
    from khronos_cli.sandbox.telegram import TelegramStandIn

__all__ = ["ADMIN_PREFIX", "admin_routes"]

ADMIN_PREFIX = "/_sandbox"


def admin_routes(
    telegram: TelegramStandIn, app: web.Application, prefix: str = ADMIN_PREFIX
) -> None:
    """Add the admin endpoints of ``telegram`` to ``app``, under ``prefix``."""
    admin = _Admin(telegram)
    pushes = Pushes(telegram.chats)
    for method, path, handler in (
        ("GET", "/stats", admin.stats),
        ("POST", "/messages", pushes.message),
        ("GET", "/messages", admin.messages),
        ("GET", "/deliveries", admin.deliveries),
        ("GET", "/operator", admin.operator),
        ("GET", "/ledger", admin.ledger),
        ("GET", "/chats", admin.chats),
        ("POST", "/failure", admin.failure),
        ("POST", "/flood", admin.flood),
        ("POST", "/flood/force", admin.force_flood),
        ("POST", "/block", admin.block),
        ("POST", "/migrate", admin.migrate),
        ("POST", "/service", pushes.service),
        ("POST", "/updates", pushes.update),
    ):
        app.router.add_route(method, prefix + path, _json_errors(handler))


def _json_errors(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            body: object = await handler(request)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except ValueError as exc:  # the stand-in refused: a bad chat, kind or state
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(body)

    return wrapped


class _Admin:
    def __init__(self, telegram: TelegramStandIn) -> None:
        self.telegram = telegram

    async def stats(self, request: web.Request) -> object:
        return self.telegram.stats()

    async def messages(self, request: web.Request) -> object:
        after = _after(request)
        items = [message.to_json() for message in self.telegram.pushed[after:]]
        return {"items": items, "next": after + len(items)}

    async def deliveries(self, request: web.Request) -> object:
        after = _after(request)
        items = [delivery.to_json() for delivery in self.telegram.deliveries[after:]]
        return {"items": items, "next": after + len(items)}

    async def operator(self, request: web.Request) -> object:
        after = _after(request)
        items = [delivery.to_json() for delivery in self.telegram.operator[after:]]
        return {"items": items, "next": after + len(items)}

    async def ledger(self, request: web.Request) -> object:
        chats = self.telegram.chats
        ledger = Ledger.from_records(
            self.telegram.pushed,
            self.telegram.deliveries,
            fallback_text=request.query.get("fallback_text", FALLBACK_TEXT),
            migrations=chats.migrations,
            blocks=chats.blocks,
        )
        return ledger.report().to_json()

    async def chats(self, request: web.Request) -> object:
        chats = self.telegram.chats
        return {
            "migrations": {str(old): new for old, new in chats.migrations.items()},
            "blocks": {str(user): [list(p) for p in ps] for user, ps in chats.blocks.items()},
            "blocked": sorted(user for user in chats.blocks if chats.blocked(user)),
        }

    async def failure(self, request: web.Request) -> object:
        body = await body_of(request)
        methods = body.get("methods")
        if methods is not None and not (
            isinstance(methods, list) and all(isinstance(m, str) for m in methods)
        ):
            raise BadRequest('"methods" must be a list of method names or null')
        count = integer(body, "count") if body.get("count") is not None else None
        status = integer(body, "status") if "status" in body else 502
        self.telegram.set_failure(
            body.get("mode", "ok"), methods=methods, status=status, count=count
        )
        return self.telegram.failure.to_json()

    async def flood(self, request: web.Request) -> object:
        body = await body_of(request)
        changes: dict[str, Any] = {}
        for key in ("per_chat", "per_group", "per_bot"):
            if key not in body:
                continue
            try:
                changes[key] = None if body[key] is None else parse_rate(body[key], key=key)
            except ConfigError as exc:
                raise BadRequest(str(exc)) from None
        flood = self.telegram.flood
        flood.limits = dataclasses.replace(flood.limits, **changes)
        return flood.limits.to_json()

    async def force_flood(self, request: web.Request) -> object:
        body = await body_of(request)
        seconds = body.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise BadRequest(f'"seconds" must be a number, got {seconds!r}')
        flood = self.telegram.flood
        flood.force(integer(body, "chat_id"), integer(body, "retry_after"), float(seconds))
        return {str(chat): forced for chat, forced in flood.forced().items()}

    async def block(self, request: web.Request) -> object:
        body = await body_of(request)
        user_id = integer(body, "user_id")
        blocked = body.get("blocked", True)
        if not isinstance(blocked, bool):
            raise BadRequest(f'"blocked" must be true or false, got {blocked!r}')
        chats = self.telegram.chats
        update_id = chats.block(user_id) if blocked else chats.unblock(user_id)
        return {"user_id": user_id, "blocked": blocked, "update_id": update_id}

    async def migrate(self, request: web.Request) -> object:
        body = await body_of(request)
        chat_id = integer(body, "chat_id")
        options = {"user_id": integer(body, "user_id")} if "user_id" in body else {}
        new_id = self.telegram.chats.migrate(chat_id, **options)
        return {"chat_id": chat_id, "migrate_to_chat_id": new_id}


def _after(request: web.Request) -> int:
    raw = request.query.get("after", "0")
    if not raw.isdigit():
        raise BadRequest(f'"after" must be a whole number, got {raw!r}')
    return int(raw)
