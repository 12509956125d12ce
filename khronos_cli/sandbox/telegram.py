"""A loopback stand-in for the Telegram Bot API, real enough for the bot not to know the difference.

Bot API shapes: ``/bot<token>/<method>`` (GET query, POST JSON or form; method names are
case-insensitive), answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
"description": ...}``; a wrong token is 401, an unknown method 404.

- ``getUpdates`` keeps Telegram's offset contract: calling it with an offset *confirms* (forgets)
  every update below it, a negative offset keeps only the last ``-offset`` updates, unconfirmed
  updates are delivered again. It long-polls up to ``timeout`` seconds (capped at 50) and wakes as
  soon as an update arrives. A new getUpdates terminates a pending one, which answers 409
  "Conflict: terminated by other getUpdates request" (what the older of two pollers on one token
  sees); while a webhook is set every getUpdates is a 409. The queue: :mod:`.updates`.
- ``sendMessage`` records a :class:`~khronos_cli.sandbox.records.Delivery` and answers a Message;
  past the flood limits (:mod:`khronos_cli.sandbox.flood`) it answers 429 with
  ``parameters.retry_after`` and counts the refusal in :attr:`TelegramStandIn.flood_rejections`.
- ``getFile`` + ``/file/bot<token>/<path>`` serve voice notes pushed with :meth:`push_voice`.
- ``setWebhook``/``deleteWebhook``/``getWebhookInfo``: see :mod:`khronos_cli.sandbox.webhook`.

Tests drive it from Python (:meth:`push_text`, :meth:`push_voice`, :attr:`deliveries`,
:meth:`set_failure`) or, from another process, through the admin API under ``/_sandbox/`` (a path
no Bot API URL can take), described in :mod:`khronos_cli.sandbox.telegram_admin`.
The stand-in is not thread-safe: use it from the event loop it serves on.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from khronos_cli.sandbox._botapi import (
    BotAPIError,
    flag,
    integer,
    json_value,
    read_params,
    string_list,
)
from khronos_cli.sandbox._server import LOOPBACK, LoopbackServer
from khronos_cli.sandbox.flood import FloodControl, FloodLimits
from khronos_cli.sandbox.records import Delivery, UserMessage, voice_file_bytes
from khronos_cli.sandbox.telegram_admin import admin_routes
from khronos_cli.sandbox.updates import PollTerminated, UpdateQueue
from khronos_cli.sandbox.webhook import WebhookSender

__all__ = ["SANDBOX_TOKEN", "BotAPIError", "TelegramFailure", "TelegramStandIn"]

SANDBOX_TOKEN = "7000000001:SANDBOXsandboxSANDBOXsandboxSANDBOX"
MAX_POLL_TIMEOUT = 50
MAX_TEXT = 4096
_PARSE_MODES = {"HTML", "Markdown", "MarkdownV2"}
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

FailureMode = Literal["ok", "errors", "hang", "down"]
Json = dict[str, Any]


@dataclass
class TelegramFailure:
    """An injected fault: ``errors`` answers ``status``, ``hang`` never answers, ``down`` drops
    the connection; limited to ``methods`` (lower-case names) and to ``count`` requests if set."""

    mode: FailureMode = "ok"
    methods: frozenset[str] | None = None
    status: int = 502
    count: int | None = None

    def to_json(self) -> Json:
        methods = None if self.methods is None else sorted(self.methods)
        return {"mode": self.mode, "methods": methods, "status": self.status, "count": self.count}


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
        self.pushed: list[UserMessage] = []
        self.requests: Counter[str] = Counter()
        self.flood_rejections = 0
        self.chat_actions = 0
        self.failure = TelegramFailure()
        self.updates = UpdateQueue()
        self.webhook = WebhookSender(self.updates, retry=webhook_retry)
        self._next_message_id = 1
        self._messages: dict[tuple[int, int], Json] = {}
        self._files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, bytes)
        self._paths: dict[str, bytes] = {}  # file_path -> bytes
        self._listeners: list[Callable[[Delivery], object]] = []
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

    def push_text(self, chat_id: int, user_id: int, text: str) -> int:
        """A user sends ``text`` in ``chat_id``; returns the new message's id."""
        return self._push_message(chat_id, user_id, {"text": text}, text, "text")

    def push_voice(self, chat_id: int, user_id: int, transcript: str) -> int:
        """A user sends a voice note that transcribes to ``transcript``; returns its message id."""
        number = len(self._files) + 1
        file_id = f"sbx-voice-{number}"
        data = voice_file_bytes(transcript)
        self._files[file_id] = (f"voice/file_{number}.oga", data)
        self._paths[f"voice/file_{number}.oga"] = data
        voice = {
            "file_id": file_id,
            "file_unique_id": f"sbxv{number}",
            "duration": max(1, len(transcript.split()) // 2),
            "mime_type": "audio/ogg",
            "file_size": len(data),
        }
        return self._push_message(chat_id, user_id, {"voice": voice}, transcript, "voice")

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
            "flood_rejections": self.flood_rejections,
            "chat_actions": self.chat_actions,
            "requests": dict(self.requests),
            "failure": self.failure.to_json(),
            "flood_limits": self.flood.limits.to_json(),
            "webhook": self.webhook.info(self.pending_update_count),
        }

    def _push_message(
        self, chat_id: int, user_id: int, content: Json, text: str, kind: Literal["text", "voice"]
    ) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        message: Json = {
            "message_id": message_id,
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": f"User {user_id}",
                "username": f"sandbox_user_{user_id}",
                "language_code": "pt-br",
            },
            "chat": self._chat(chat_id, user_id),
            "date": int(time.time()),
            **content,
        }
        self._messages[(chat_id, message_id)] = message
        update_id = self.push_update({"message": message})
        self.pushed.append(
            UserMessage(update_id, message_id, chat_id, user_id, text, kind, self.clock())
        )
        return message_id

    @staticmethod
    def _chat(chat_id: int, user_id: int | None = None) -> Json:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {user_id or chat_id}"}
        kind = "supergroup" if chat_id <= -1_000_000_000_000 else "group"
        return {"id": chat_id, "type": kind, "title": f"Sandbox group {chat_id}"}

    # -- HTTP -------------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        admin_routes(self, app)

    async def _on_close(self) -> None:
        self.updates.wake()
        await self.webhook.stop()

    async def _handle_method(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].lower()
        self.requests[method] += 1
        failed = await self._inject_failure(request, method)
        if failed is not None:
            return failed
        try:
            if request.match_info["token"] != self.token:
                raise BotAPIError(401, "Unauthorized")
            handler = self._methods.get(method)
            if handler is None:
                raise BotAPIError(404, "Not Found")
            result = await handler(await read_params(request))
        except BotAPIError as exc:
            return exc.response()
        return web.json_response({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        failed = await self._inject_failure(request, "file")
        if failed is not None:
            return failed
        if request.match_info["token"] != self.token:
            return BotAPIError(401, "Unauthorized").response()
        data = self._paths.get(request.match_info["path"])
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
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "khronos sandbox",
            "username": "khronos_sandbox_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
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
        if len(text) > MAX_TEXT:
            raise BotAPIError(400, "Bad Request: message is too long")
        parse_mode = params.get("parse_mode") or None
        if parse_mode is not None and parse_mode not in _PARSE_MODES:
            raise BotAPIError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        reply_to = integer(params, "reply_to_message_id", None)
        if "reply_parameters" in params:
            reply = json_value(params, "reply_parameters")
            if not isinstance(reply, dict) or not isinstance(reply.get("message_id"), int):
                raise BotAPIError(400, "Bad Request: invalid reply parameters specified")
            reply_to = reply["message_id"]
        retry_after = self.flood.admit(chat_id)
        if retry_after is not None:
            self.flood_rejections += 1
            raise BotAPIError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        message_id = self._next_message_id
        self._next_message_id += 1
        delivery = Delivery(message_id, chat_id, text, reply_to, parse_mode, self.clock())
        self.deliveries.append(delivery)
        for listener in list(self._listeners):
            listener(delivery)
        message: Json = {
            "message_id": message_id,
            "from": await self._get_me(params),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            "text": text,
        }
        replied = self._messages.get((chat_id, reply_to)) if reply_to is not None else None
        if replied is not None:
            message["reply_to_message"] = replied
        return message

    async def _send_chat_action(self, params: Json) -> bool:
        if integer(params, "chat_id", None) is None:
            raise BotAPIError(400, "Bad Request: chat_id is empty")
        if not params.get("action"):
            raise BotAPIError(400, "Bad Request: action is empty")
        self.chat_actions += 1
        return True

    async def _get_file(self, params: Json) -> Json:
        file_id = str(params.get("file_id") or "")
        if file_id not in self._files:
            raise BotAPIError(400, "Bad Request: invalid file_id")
        path, data = self._files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": file_id.replace("sbx-voice-", "sbxv"),
            "file_size": len(data),
            "file_path": path,
        }

    async def _set_webhook(self, params: Json) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN.match(str(secret)):
            raise BotAPIError(400, "Bad Request: secret token contains unallowed characters")
        if url and not re.match(r"^https?://", url):
            raise BotAPIError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        if flag(params, "drop_pending_updates"):
            self.updates.drop_pending()
        if "allowed_updates" in params:
            self.updates.allowed_updates = string_list(params, "allowed_updates")
        await self.webhook.stop()
        if url:
            self.webhook.start(url, None if secret is None else str(secret))
        self.updates.wake()  # a pending getUpdates now answers 409
        return True

    async def _delete_webhook(self, params: Json) -> bool:
        if flag(params, "drop_pending_updates"):
            self.updates.drop_pending()
        await self.webhook.stop()
        return True

    async def _get_webhook_info(self, params: Json) -> Json:
        return self.webhook.info(self.pending_update_count)


def _webhook_conflict() -> BotAPIError:
    return BotAPIError(
        409,
        "Conflict: can't use getUpdates method while webhook is active; "
        "use deleteWebhook to delete the webhook first",
    )
