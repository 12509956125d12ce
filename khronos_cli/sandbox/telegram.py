"""A loopback stand-in for the Telegram Bot API, real enough for the bot not to know the difference.

Bot API shapes: ``/bot<token>/<method>`` (GET query, POST JSON or form; method names are
case-insensitive), answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
"description": ...[, "parameters": {...}]}``; a wrong token is 401, an unknown method 404.

- ``getUpdates`` keeps Telegram's offset contract: calling it with an offset *confirms* (forgets)
  every update below it, a negative offset keeps only the last ``-offset`` updates, unconfirmed
  updates are delivered again. It long-polls up to ``timeout`` seconds (capped at 50) and wakes as
  soon as an update arrives. A new getUpdates terminates a pending one, which answers 409
  "Conflict: terminated by other getUpdates request" (what the older of two pollers on one token
  sees); while a webhook is set every getUpdates is a 409. Only the update kinds asked for in
  ``allowed_updates`` are created. The queue: :mod:`.updates`.
- ``sendMessage`` records a :class:`~khronos_cli.sandbox.records.Delivery` and answers a Message.
  It refuses what Telegram refuses: a text over 4,096 code points; a chat whose user blocked the
  bot (403); a group upgraded to a supergroup (400 with ``parameters.migrate_to_chat_id``); a reply
  to a message not in that chat, unless ``allow_sending_without_reply`` (then it goes out as no
  reply: the Delivery keeps the asked ``reply_to_message_id`` and says ``reply_missing``); past
  the flood limits or in a chat forced into flood (:mod:`.flood`), a 429 with
  ``parameters.retry_after``.
- ``getFile`` + ``/file/bot<token>/<path>`` serve voice notes (:mod:`.files`); over 20 MB, 400.
- ``setWebhook``/``deleteWebhook``/``getWebhookInfo``: see :mod:`.webhook` (URL rules, loopback,
  leftover webhooks).
- Several bots, as the real server serves every token: :meth:`TelegramStandIn.add_bot` (before
  :meth:`start`) adds another token, a bot of its own (its updates, chats, deliveries, flood
  windows, failures, webhook) on the same port, its admin API under ``/_sandbox/bot<id>/``.

The world the bot lives in — chats, users' messages, service messages, edits, callback queries,
blocks, migrations — is :attr:`TelegramStandIn.chats` (:mod:`.chats`): tests call
``telegram.chats.push_service(...)``, ``telegram.chats.migrate(...)``, ``telegram.chats.block(...)``
and read :attr:`TelegramStandIn.deliveries` and :attr:`TelegramStandIn.pushed`
(``push_text``/``push_voice``/``push_update`` stay here too). From another process, the admin API
under ``/_sandbox/`` (a path no Bot API URL can take) does the same: :mod:`.telegram_admin`.
The bot is ``@khronos_sandbox_bot``; it reads every group message (``can_read_all_group_messages``,
as a bot with privacy mode off or an admin does), so it must pick what is addressed to it.
The stand-in is not thread-safe: use it from the event loop it serves on.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from khronos_cli.errors import SandboxError
from khronos_cli.sandbox._botapi import (
    BotAPIError,
    FailureMode,
    TelegramFailure,
    flag,
    integer,
    json_value,
    read_params,
    string_list,
)
from khronos_cli.sandbox._server import LOOPBACK, LoopbackServer
from khronos_cli.sandbox.chats import Chats
from khronos_cli.sandbox.files import FileTooBig, UnknownFile
from khronos_cli.sandbox.flood import FloodControl, FloodLimits
from khronos_cli.sandbox.records import Delivery, UserMessage
from khronos_cli.sandbox.telegram_admin import ADMIN_PREFIX, admin_routes
from khronos_cli.sandbox.updates import PollTerminated, UpdateQueue
from khronos_cli.sandbox.webhook import WebhookSender, url_error

__all__ = ["OPERATOR_CHAT", "SANDBOX_TOKEN", "BotAPIError", "TelegramFailure", "TelegramStandIn"]

SANDBOX_TOKEN = "7000000001:SANDBOXsandboxSANDBOXsandboxSANDBOX"
OPERATOR_CHAT = 424_242_001  # the operator's chat: alerts land here, apart from users' answers
MAX_POLL_TIMEOUT = 50
MAX_TEXT = 4096
_PARSE_MODES = {"HTML", "Markdown", "MarkdownV2"}
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]*$")
_INVALID_URL = "Bad Request: invalid webhook URL specified"

Json = dict[str, Any]


class TelegramStandIn(LoopbackServer):
    """The Telegram Bot API on a loopback port, with a Python API for tests."""

    name = "telegram"

    def __init__(
        self,
        *,
        token: str = SANDBOX_TOKEN,
        flood_limits: FloodLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        webhook_retry: tuple[float, float] = (0.5, 30.0),
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.flood = FloodControl(flood_limits, clock=clock)
        self.clock = clock
        self.deliveries: list[Delivery] = []
        self.operator: list[Delivery] = []  # to OPERATOR_CHAT: alerts, never in the ledger
        self.requests: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()  # 4xx answers to sends, by description
        self.flood_rejections = 0
        self.chat_actions = 0
        self.failure = TelegramFailure()
        self.updates = UpdateQueue()
        self.chats = Chats(self.updates, bot_id=self.bot_id, clock=clock)
        self.webhook = WebhookSender(self.updates, retry=webhook_retry)
        self._listeners: list[Callable[[Delivery], object]] = []
        self.bots: dict[str, TelegramStandIn] = {token: self}  # every token this port serves
        self._methods: dict[str, Callable[[Json], Awaitable[object]]] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "sendchataction": self._send_chat_action,
            "getfile": self._get_file,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
        }

    # -- Python API -------------------------------------------------------------------------------

    @property
    def pending_update_count(self) -> int:
        """Updates not yet confirmed by getUpdates (or accepted by the webhook)."""
        return len(self.updates)

    @property
    def pushed(self) -> list[UserMessage]:
        """Everything users did, in order (messages, service messages, edits, other updates)."""
        return self.chats.pushed

    def push_text(
        self, chat_id: int, user_id: int, text: str, *, reply_to: int | None = None
    ) -> int:
        """A user sends ``text`` in ``chat_id``; returns the new message's id."""
        return self.chats.push_text(chat_id, user_id, text, reply_to=reply_to)

    def push_voice(
        self,
        chat_id: int,
        user_id: int,
        transcript: str,
        *,
        file_size: int | None = None,
        caption: str | None = None,
        reply_to: int | None = None,
    ) -> int:
        """A user sends a voice note that transcribes to ``transcript``; returns its message id.
        ``file_size`` over 20 MB declares a file too big to download."""
        return self.chats.push_voice(
            chat_id, user_id, transcript, file_size=file_size, caption=caption, reply_to=reply_to
        )

    def push_update(self, update: Mapping[str, Any]) -> int:
        """Queue any other update (``update_id`` is assigned); returns the update id."""
        return self.updates.push(update)

    def set_failure(
        self,
        mode: FailureMode = "ok",
        *,
        methods: Iterable[str] | None = None,
        status: int = 502,
        count: int | None = None,
    ) -> None:
        """Inject a fault into Bot API calls (all, or only ``methods``); ``"ok"`` ends it."""
        if mode not in ("ok", "errors", "hang", "down"):
            raise ValueError(f"unknown failure mode {mode!r}: expected ok, errors, hang or down")
        names = None if methods is None else frozenset(m.lower() for m in methods)
        self.failure = TelegramFailure(mode, names, status, count)

    def add_bot(self, token: str) -> TelegramStandIn:
        """Serve another bot (``token``, another id) on this port; call before :meth:`start`."""
        if self.started:
            raise SandboxError("add every bot before the Telegram stand-in starts")
        other = TelegramStandIn(token=token, flood_limits=self.flood.limits, clock=self.clock)
        self.bots[token] = other
        return other

    def add_listener(self, callback: Callable[[Delivery], object]) -> None:
        """Call ``callback(delivery)`` for every message the bot sends from now on."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[Delivery], object]) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def stats(self) -> Json:
        """Counters for tests and the admin API."""
        return {
            "pending_update_count": self.pending_update_count,
            "pushed": len(self.pushed),
            "deliveries": len(self.deliveries),
            "operator_messages": len(self.operator),
            "flood_rejections": self.flood_rejections,
            "refusals": dict(self.refusals),
            "chat_actions": self.chat_actions,
            "requests": dict(self.requests),
            "failure": self.failure.to_json(),
            "flood_limits": self.flood.limits.to_json(),
            "flood_forced": {str(chat): f for chat, f in self.flood.forced().items()},
            "allowed_updates": self.updates.allowed_updates,
            "webhook": self.webhook.info(self.pending_update_count),
        }

    # -- HTTP -------------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        admin_routes(self, app)
        for other in self.bots.values():
            if other is not self:
                admin_routes(other, app, prefix=f"{ADMIN_PREFIX}/bot{other.bot_id}")

    async def _on_start(self) -> None:
        for other in self.bots.values():
            other._closing = self._closing  # the other bots close with this port

    async def _on_close(self) -> None:
        for bot in self.bots.values():
            bot.updates.wake()
            await bot.webhook.stop()

    async def _handle_method(self, request: web.Request) -> web.StreamResponse:
        bot = self.bots.get(request.match_info["token"])
        return await (bot or self)._method(request, known=bot is not None)

    async def _method(self, request: web.Request, *, known: bool) -> web.StreamResponse:
        method = request.match_info["method"].lower()
        self.requests[method] += 1
        failed = await self._inject_failure(request, method)
        if failed is not None:
            return failed
        try:
            if not known:
                raise BotAPIError(401, "Unauthorized")
            handler = self._methods.get(method)
            if handler is None:
                raise BotAPIError(404, "Not Found")
            result = await handler(await read_params(request))
        except BotAPIError as exc:
            return exc.response()
        return web.json_response({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        bot = self.bots.get(request.match_info["token"])
        failed = await (bot or self)._inject_failure(request, "file")
        if failed is not None:
            return failed
        if bot is None:
            return BotAPIError(401, "Unauthorized").response()
        data = bot.chats.files.content(request.match_info["path"])
        if data is None:
            return BotAPIError(404, "Not Found").response()
        return web.Response(body=data, content_type="audio/ogg")

    async def _inject_failure(self, request: web.Request, method: str) -> web.StreamResponse | None:
        failure = self.failure
        if failure.mode == "ok" or (failure.methods is not None and method not in failure.methods):
            return None
        if failure.count is not None:
            failure.count -= 1
            if failure.count <= 0:
                self.failure = TelegramFailure()
        if failure.mode == "errors":
            reason = "Bad Gateway" if failure.status == 502 else "Internal Server Error"
            return BotAPIError(failure.status, reason).response()
        if failure.mode == "hang":
            await self._pause(None)
        return self._drop_connection(request)

    # -- Bot API methods --------------------------------------------------------------------------

    async def _get_me(self, params: Json) -> Json:
        return {
            **self.chats.bot,
            "can_join_groups": True,
            "can_read_all_group_messages": True,
            "supports_inline_queries": False,
        }

    async def _get_updates(self, params: Json) -> list[Json]:
        if self.webhook.url:
            raise _webhook_conflict()
        offset = integer(params, "offset", 0)
        limit = min(max(integer(params, "limit", 100), 1), 100)
        timeout = min(max(integer(params, "timeout", 0), 0), MAX_POLL_TIMEOUT)
        if "allowed_updates" in params:
            self.updates.allowed_updates = string_list(params, "allowed_updates")
        try:
            batch = await self.updates.poll(
                offset, limit, timeout, stop=lambda: bool(self.webhook.url) or self.closing
            )
        except PollTerminated:
            raise BotAPIError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            ) from None
        if self.webhook.url:
            raise _webhook_conflict()
        return batch

    async def _send_message(self, params: Json) -> Json:
        chat_id = integer(params, "chat_id", None)
        if chat_id is None:
            raise BotAPIError(400, "Bad Request: chat_id is empty")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BotAPIError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:  # code points, as the Bot API server's utf8_length counts
            raise BotAPIError(400, "Bad Request: message is too long")
        parse_mode = params.get("parse_mode") or None
        if parse_mode is not None and parse_mode not in _PARSE_MODES:
            raise BotAPIError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        reply_to = integer(params, "reply_to_message_id", None)
        without_reply = flag(params, "allow_sending_without_reply")
        if params.get("reply_parameters") not in (None, ""):  # replaces the legacy fields
            reply = json_value(params, "reply_parameters")
            if reply == {}:
                reply = {"message_id": 0}  # an empty object: no reply, as the server reads it
            if not isinstance(reply, dict) or not isinstance(reply.get("message_id"), int):
                raise BotAPIError(400, "Bad Request: invalid reply parameters specified")
            reply_to = reply["message_id"]
            without_reply = reply.get("allow_sending_without_reply") is True
        replied = self._check_send(chat_id, reply_to, without_reply)
        retry_after = self.flood.admit(chat_id)
        if retry_after is not None:
            self.flood_rejections += 1
            raise BotAPIError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        message = self.chats.add_bot_message(chat_id, text, replied)
        missing = replied is None and reply_to is not None and reply_to > 0
        delivery = Delivery(
            message["message_id"], chat_id, text, reply_to, parse_mode, self.clock(), missing
        )
        if chat_id == OPERATOR_CHAT:
            self.operator.append(delivery)
            return message
        self.deliveries.append(delivery)
        for listener in list(self._listeners):
            listener(delivery)
        return message

    async def _send_chat_action(self, params: Json) -> bool:
        chat_id = integer(params, "chat_id", None)
        if chat_id is None:
            raise BotAPIError(400, "Bad Request: chat_id is empty")
        if not params.get("action"):
            raise BotAPIError(400, "Bad Request: action is empty")
        self._check_send(chat_id)
        self.chat_actions += 1
        return True

    def _check_send(
        self, chat_id: int, reply_to: int | None = None, without_reply: bool = True
    ) -> Json | None:
        """The message a send replies to, or the Bot API's refusal (counted)."""
        try:
            self.chats.check_send(chat_id)
            return self.chats.replied_message(chat_id, reply_to, without_reply)
        except BotAPIError as exc:
            self.refusals[exc.description] += 1
            raise

    async def _get_file(self, params: Json) -> Json:
        try:
            return self.chats.files.get_file(str(params.get("file_id") or ""))
        except UnknownFile:
            raise BotAPIError(400, "Bad Request: invalid file_id") from None
        except FileTooBig:
            raise BotAPIError(400, "Bad Request: file is too big") from None

    async def _set_webhook(self, params: Json) -> bool:
        url = str(params.get("url") or "")
        secret = str(params.get("secret_token") or "") if url else ""
        if url:
            error = url_error(url)  # checked in the real server's order: URL, secret, then rules
            if error == _INVALID_URL:
                raise BotAPIError(400, error)
            if len(secret) > 256:
                raise BotAPIError(400, "Bad Request: secret token is too long")
            if not _SECRET_TOKEN.match(secret):
                raise BotAPIError(400, "Bad Request: secret token contains unallowed characters")
            if error is not None:
                raise BotAPIError(400, error)
        if flag(params, "drop_pending_updates"):
            self.updates.drop_pending()
        if "allowed_updates" in params:
            self.updates.allowed_updates = string_list(params, "allowed_updates")
        await self.webhook.stop()
        if url:
            self.webhook.start(url, secret or None)
        self.updates.wake()  # a pending getUpdates now answers 409
        return True

    async def _delete_webhook(self, params: Json) -> bool:
        if flag(params, "drop_pending_updates"):
            self.updates.drop_pending()
        await self.webhook.stop()
        return True

    async def _get_webhook_info(self, params: Json) -> Json:
        info = self.webhook.info(self.pending_update_count)
        if info["url"] and self.updates.allowed_updates:
            info["allowed_updates"] = self.updates.allowed_updates
        return info


def _webhook_conflict() -> BotAPIError:
    return BotAPIError(
        409,
        "Conflict: can't use getUpdates method while webhook is active; "
        "use deleteWebhook to delete the webhook first",
    )
