"""Webhook mode of the sandbox Telegram: POST each update to the bot, the way Telegram does.

``setWebhook`` checks the URL as Telegram does (:func:`url_error`, texts from
``telegram-bot-api/WebhookActor.cpp`` and ``Client.cpp``): an unparsable URL is ``400 "Bad Request:
invalid webhook URL specified"`` (a URL without a scheme is taken as https, as the server does);
the URL must be https (``"Bad Request: bad webhook: An HTTPS URL must be provided for webhook"``)
on port 80, 88, 443 or 8443 (``"... Webhook can be set up only on ports 80, 88, 443 or 8443"``).
**Loopback URLs are the exception** (127.0.0.0/8, ``localhost``, ``::1``): they are accepted with
http and any port, as a local Bot API server (``telegram-bot-api --local``) accepts any address,
http and any port — that is how a bot on this machine takes the sandbox's webhook.

**A URL that is not loopback is never contacted** (the sandbox has no network): it behaves as an
unreachable endpoint. Each pending update is "tried" with the backoff below and fails with
``last_error_message`` "Connection refused"; updates stay pending. That is a *leftover webhook*: a
test sets one from any process with the Bot API's own call, ``POST /bot<token>/setWebhook
{"url": "https://bot.example.com/hook"}``, and the bot's ``getUpdates`` then answers 409 until it
calls ``deleteWebhook``.

While a webhook is set, one background task takes the oldest pending update, POSTs it as JSON to
the webhook URL (with ``X-Telegram-Bot-Api-Secret-Token`` when a secret was set) and forgets it
once the bot answers 2xx. Any other answer, or a transport error, is recorded as the webhook's
``last_error_message`` and the same update is retried after a backoff that doubles from
``retry[0]`` up to ``retry[1]`` seconds, or after the answer's ``Retry-After`` header when it has
one. Updates go one at a time, in order (Telegram may use several connections; one keeps the
sandbox's order deterministic).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

__all__ = ["SECRET_HEADER", "WebhookSender", "is_loopback", "url_error"]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_PORTS = (80, 88, 443, 8443)
UNREACHABLE = "Connection refused"
_POST_TIMEOUT = 10.0
_MAX_RETRY_AFTER = 3600.0


def is_loopback(url: str) -> bool:
    """True when ``url``'s host is 127.0.0.0/8, ``::1`` or ``localhost``."""
    host = urlsplit(url if "://" in url else f"https://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_error(url: str) -> str | None:
    """The Bot API's description of what is wrong with webhook ``url``; None when it is fine."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    try:
        port = parts.port
    except ValueError:
        return "Bad Request: invalid webhook URL specified"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Bad Request: invalid webhook URL specified"
    if is_loopback(url):
        return None
    if parts.scheme != "https":
        return "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
    if (port or 443) not in WEBHOOK_PORTS:
        return "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
    return None


class _UpdateQueue(Protocol):
    def first_pending(self) -> dict[str, Any] | None: ...
    def confirm(self, offset: int) -> None: ...
    def arrival(self) -> asyncio.Event: ...


class WebhookSender:
    """Delivers a Telegram stand-in's updates to a webhook URL, retrying with backoff."""

    def __init__(self, queue: _UpdateQueue, *, retry: tuple[float, float] = (0.5, 30.0)) -> None:
        self._queue = queue
        self.retry_initial, self.retry_max = retry
        self.url = ""
        self.secret: str | None = None
        self.delivered = 0
        self.failures = 0
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self._task: asyncio.Task[None] | None = None
        # How the sender waits between attempts; tests inject a recorder instead of sleeping.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def start(self, url: str, secret: str | None) -> None:
        """Begin delivering to ``url`` (the caller stopped any previous sender first)."""
        self.url = url
        self.secret = secret
        self.last_error_date = None
        self.last_error_message = None
        self._task = asyncio.create_task(self._run(), name="sandbox-telegram-webhook")

    async def stop(self) -> None:
        """Stop delivering; pending updates stay queued for getUpdates."""
        self.url = ""
        self.secret = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def info(self, pending: int) -> dict[str, Any]:
        """``getWebhookInfo``'s result."""
        info: dict[str, Any] = {
            "url": self.url,
            "has_custom_certificate": False,
            "pending_update_count": pending,
            "max_connections": 1,
        }
        if self.url and is_loopback(self.url):  # an unreachable URL never resolved
            info["ip_address"] = "127.0.0.1"
        if self.last_error_date is not None:
            info["last_error_date"] = self.last_error_date
            info["last_error_message"] = self.last_error_message
        return info

    async def _run(self) -> None:
        headers = {SECRET_HEADER: self.secret} if self.secret else {}
        delay = self.retry_initial
        reachable = is_loopback(self.url)
        async with httpx.AsyncClient(timeout=_POST_TIMEOUT, headers=headers) as client:
            while True:
                arrival = self._queue.arrival()
                update = self._queue.first_pending()
                if update is None:
                    await arrival.wait()
                    continue
                if reachable:
                    wait = await self._post(client, update)
                else:  # no network in the sandbox: the endpoint never answers
                    self._error(UNREACHABLE)
                    wait = 0.0
                if wait is None:
                    self.delivered += 1
                    self._queue.confirm(int(update["update_id"]) + 1)
                    delay = self.retry_initial
                    continue
                self.failures += 1
                await self.sleep(wait if wait > 0 else delay)
                delay = min(delay * 2, self.retry_max)

    async def _post(self, client: httpx.AsyncClient, update: dict[str, Any]) -> float | None:
        """None when the bot took the update; else seconds to wait (0.0: use the backoff)."""
        try:
            response = await client.post(self.url, json=update)
        except httpx.HTTPError as exc:
            self._error(f"Connection failed: {type(exc).__name__}: {exc}")
            return 0.0
        if response.is_success:
            return None
        self._error(
            f"Wrong response from the webhook: {response.status_code} {response.reason_phrase}"
        )
        try:
            retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            return 0.0
        return min(max(retry_after, 0.0), _MAX_RETRY_AFTER)

    def _error(self, message: str) -> None:
        self.last_error_date = int(time.time())
        self.last_error_message = message
