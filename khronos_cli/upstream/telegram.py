"""The Telegram Bot API client (httpx), with Telegram's error shapes mapped to UpstreamError.

A 429 answer carries ``parameters.retry_after`` (read it, never the description text); it becomes
``UpstreamError.retry_after`` so the worker can halt the sends of that chat (see
``runtime.wiring``). A 400 with ``parameters.migrate_to_chat_id`` (the group became a supergroup)
becomes :class:`ChatMigratedError`. ``getUpdates`` is never throttled: it has a guard of its own
(the ``telegram-updates`` breaker, sized to the long poll), never the limiter; sends take a chat
key and a priority. ``sendChatAction`` ("typing…") takes no guard at all: it is a hint, never
retried, never counted against the breaker.

The bot token is part of every URL path; no message raised here contains a URL, and Telegram's
description (or a proxy's, which may quote the path) passes the scrubber first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx

from khronos_cli.config import Secret
from khronos_cli.errors import ChatMigratedError, UpstreamError
from khronos_cli.redaction import Scrubber
from khronos_cli.resilience.limiter.registry import PRIORITY_BULK, PRIORITY_REPLY
from khronos_cli.upstream.base import Guard, UpstreamClient, unguarded

__all__ = ["PRIORITY_BULK", "PRIORITY_REPLY", "TelegramClient"]

T = TypeVar("T")

MAX_POLL_TIMEOUT = 50  # Telegram's own cap on the long-poll timeout
MAX_DOWNLOAD = 20 * 1024 * 1024  # getFile refuses bigger files ("file is too big")
_POLL_MARGIN = 10.0
_ACTION_TIMEOUT = 2.0


class TelegramClient(UpstreamClient):
    """``getUpdates``, ``sendMessage``, ``sendChatAction``, files and webhooks."""

    dependency = "telegram-api"

    def __init__(
        self,
        token: Secret,
        base_url: str = "https://api.telegram.org",
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        poll_guard: Guard | None = None,
        read_guard: Guard | None = None,
        scrub: Scrubber | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            transport=transport,
            guard=guard,
            scrub=scrub or Scrubber([token]),
        )
        self._token = token
        self._poll_guard = poll_guard
        # getMe, getFile, downloads and webhook calls: no chat, so no chat's budget (the send
        # limiter keys by chat; under it they would queue behind each other at a chat's 1/s).
        self._read_guard = read_guard
        self.timeout = timeout

    # -- the API --------------------------------------------------------------------------------

    async def get_updates(
        self,
        offset: int | None = None,
        *,
        timeout: int = 30,
        limit: int = 100,
        allowed_updates: Sequence[str] = ("message",),
    ) -> list[dict[str, Any]]:
        """Long-poll for updates. ``offset`` confirms every update below it to Telegram."""
        poll = max(0, min(int(timeout), MAX_POLL_TIMEOUT))
        params: dict[str, Any] = {
            "timeout": poll,
            "limit": limit,
            "allowed_updates": list(allowed_updates),
        }
        if offset is not None:
            params["offset"] = offset
        wait = poll + _POLL_MARGIN

        async def attempt() -> list[dict[str, Any]]:
            result = await self._method("getUpdates", params, timeout=wait)
            return list(result)

        return await self._guarded(attempt, guard=self._poll_guard or unguarded)

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        reply_to_message_id: int | None = None,
        priority: int = PRIORITY_REPLY,
    ) -> dict[str, Any]:
        """Send plain text (never parsed as markup: user text must not become formatting)."""
        params: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if reply_to_message_id is not None:
            params["reply_parameters"] = {
                "message_id": reply_to_message_id,
                "allow_sending_without_reply": True,
            }
        return await self._guarded(
            lambda: self._method("sendMessage", params), key=chat_id, priority=priority
        )

    async def send_chat_action(self, chat_id: int, action: str = "typing") -> bool:
        """A chat action ("typing…", shown for up to 5 s): no guard, a short timeout, one try."""
        params = {"chat_id": chat_id, "action": action}
        return bool(await self._method("sendChatAction", params, timeout=_ACTION_TIMEOUT))

    async def get_me(self) -> dict[str, Any]:
        """The bot's own user: its ``id`` and ``username`` (what group messages address)."""
        return dict(await self._read(lambda: self._method("getMe", {})))

    async def ping(self) -> None:
        """The health check: ``getMe`` (cheap, and proves the token works)."""
        await self._method("getMe", {})

    async def get_file(self, file_id: str) -> dict[str, Any]:
        """File metadata, with the ``file_path`` to download."""
        result = await self._read(lambda: self._method("getFile", {"file_id": file_id}))
        return dict(result)

    async def download_file(self, file_path: str) -> bytes:
        async def attempt() -> bytes:
            path = f"/file/bot{self._token.reveal()}/{file_path.lstrip('/')}"
            response = await self._send("GET", path)
            if response.status_code != 200:
                raise UpstreamError(
                    self.dependency,
                    f"file download answered HTTP {response.status_code}",
                    status=response.status_code,
                )
            return response.content

        return await self._read(attempt)

    async def set_webhook(self, url: str, *, secret_token: str | None = None) -> bool:
        params: dict[str, Any] = {"url": url, "allowed_updates": ["message"]}
        if secret_token:
            params["secret_token"] = secret_token
        return bool(await self._read(lambda: self._method("setWebhook", params)))

    async def delete_webhook(self, *, drop_pending_updates: bool = False) -> bool:
        """Remove a webhook (polling cannot work while one is set); pending updates are kept."""
        params = {"drop_pending_updates": drop_pending_updates}
        return bool(await self._read(lambda: self._method("deleteWebhook", params)))

    async def _read(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """A call that sends nothing to a chat: through ``read_guard`` (the breaker alone in the
        worker), or the client's guard when none was given."""
        return await self._guarded(attempt, guard=self._read_guard)

    # -- the wire -------------------------------------------------------------------------------

    async def _method(
        self, name: str, params: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Call one Bot API method and return its ``result``, or raise UpstreamError."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        response = await self._send(
            "POST", f"/bot{self._token.reveal()}/{name}", json=params, **extra
        )
        body = self._json(response)
        if not isinstance(body, dict) or "ok" not in body:
            raise UpstreamError(
                self.dependency,
                f"{name} answered an unexpected shape",
                status=502,
                code="garbage",
            )
        if body["ok"] is True:
            return body.get("result")
        code = body.get("error_code")
        status = code if isinstance(code, int) else response.status_code
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            parameters = {}
        retry_after = parameters.get("retry_after")
        description = self._scrub(str(body.get("description", "no description")))[:200]
        migrated = parameters.get("migrate_to_chat_id")
        if isinstance(migrated, int) and not isinstance(migrated, bool):
            raise ChatMigratedError(
                self.dependency,
                f"{name} failed with {status}: {description}",
                chat_id=int(params.get("chat_id") or 0),
                new_chat_id=migrated,
            )
        raise UpstreamError(
            self.dependency,
            f"{name} failed with {status}: {description}",
            status=status,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
            code=str(status),
        )
