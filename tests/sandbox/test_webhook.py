"""Webhook mode of the Telegram stand-in: POSTs with the secret header, retries, 409 on polls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from khronos_cli.sandbox import SANDBOX_TOKEN, FloodLimits, TelegramStandIn
from khronos_cli.sandbox.webhook import SECRET_HEADER
from tests.support import async_wait_for

CHAT = 1001


class Receiver:
    """A real HTTP server standing for the bot's webhook endpoint, answering from a script."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = script
        self.received: list[tuple[str | None, dict[str, Any]]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.headers.get(SECRET_HEADER), await request.json()))
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandIn]:
    stand_in = TelegramStandIn(flood_limits=FloodLimits.off(), webhook_retry=(0.01, 0.04))
    async with stand_in:
        yield stand_in


@pytest.fixture
async def client(telegram: TelegramStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{telegram.base_url}/bot{SANDBOX_TOKEN}") as http:
        yield http


async def test_updates_are_posted_with_the_secret_header(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """Each update is POSTed in order with X-Telegram-Bot-Api-Secret-Token, then forgotten."""
    async with Receiver([]) as receiver:
        response = await client.post(
            "/setWebhook", json={"url": receiver.url, "secret_token": "s3cret_-X"}
        )
        assert response.json() == {"ok": True, "result": True}
        telegram.push_text(CHAT, CHAT, "one")
        telegram.push_text(CHAT, CHAT, "two")
        await async_wait_for(lambda: len(receiver.received) == 2)
        await async_wait_for(lambda: telegram.pending_update_count == 0)
    assert [secret for secret, _ in receiver.received] == ["s3cret_-X", "s3cret_-X"]
    assert [body["message"]["text"] for _, body in receiver.received] == ["one", "two"]
    assert telegram.webhook.delivered == 2


async def test_failed_posts_are_retried_with_backoff(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A 5xx answer keeps the update and retries it with a doubling backoff until a 2xx."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    telegram.webhook.sleep = record
    async with Receiver([(500, {}), (502, {}), (503, {}), (200, {})]) as receiver:
        await client.post("/setWebhook", json={"url": receiver.url})
        telegram.push_text(CHAT, CHAT, "persist")
        await async_wait_for(lambda: telegram.pending_update_count == 0)
        info = (await client.get("/getWebhookInfo")).json()["result"]
    assert [body["update_id"] for _, body in receiver.received] == [1, 1, 1, 1]
    assert waits == [0.01, 0.02, 0.04]
    assert info["url"] == receiver.url
    assert info["pending_update_count"] == 0
    assert info["last_error_message"] == "Wrong response from the webhook: 503 Service Unavailable"
    assert telegram.webhook.failures == 3


async def test_retry_after_header_is_honoured(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A 429 with Retry-After: 7 makes the stand-in wait 7 s before the next attempt."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    telegram.webhook.sleep = record
    async with Receiver([(429, {"Retry-After": "7"}), (200, {})]) as receiver:
        await client.post("/setWebhook", json={"url": receiver.url})
        telegram.push_text(CHAT, CHAT, "later")
        await async_wait_for(lambda: telegram.pending_update_count == 0)
    assert waits == [7.0]


async def test_unreachable_webhook_keeps_updates(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A webhook nobody listens on records a connection error and loses no update."""
    async with Receiver([]) as receiver:
        url = receiver.url  # closed on exit: the port refuses connections afterwards
    await client.post("/setWebhook", json={"url": url})
    telegram.push_text(CHAT, CHAT, "kept")
    await async_wait_for(lambda: telegram.webhook.failures >= 2)
    info = (await client.get("/getWebhookInfo")).json()["result"]
    assert info["last_error_message"].startswith("Connection failed: ConnectError")
    assert telegram.pending_update_count == 1


async def test_get_updates_conflicts_while_a_webhook_is_set(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """getUpdates answers 409 while a webhook is set, and works again after deleteWebhook."""
    await client.post("/setWebhook", json={"url": "http://127.0.0.1:9/unused"})
    conflict = await client.post("/getUpdates", json={})
    await client.post("/deleteWebhook", json={"drop_pending_updates": True})
    telegram.push_text(CHAT, CHAT, "polled")
    after = await client.post("/getUpdates", json={})
    assert conflict.status_code == 409
    assert "webhook is active" in conflict.json()["description"]
    assert [u["message"]["text"] for u in after.json()["result"]] == ["polled"]
    assert (await client.get("/getWebhookInfo")).json()["result"]["url"] == ""


async def test_set_webhook_rejects_a_bad_secret(client: httpx.AsyncClient) -> None:
    """A secret token with characters Telegram does not allow answers 400."""
    response = await client.post(
        "/setWebhook", json={"url": "http://127.0.0.1:9/x", "secret_token": "no spaces"}
    )
    assert response.status_code == 400
    assert "secret token" in response.json()["description"]


@pytest.mark.parametrize(
    ("url", "secret", "description"),
    [
        ("http://bot.example.com/hook", None, "An HTTPS URL must be provided for webhook"),
        ("https://bot.example.com:8080/hook", None, "only on ports 80, 88, 443 or 8443"),
        ("ftp://bot.example.com/hook", None, "Bad Request: invalid webhook URL specified"),
        ("https://bot.example.com:99999/hook", None, "invalid webhook URL specified"),
        ("https://bot.example.com/hook", "x" * 257, "Bad Request: secret token is too long"),
        ("https://bot.example.com/hook", "só-ascii", "secret token contains unallowed"),
    ],
)
async def test_set_webhook_checks_telegrams_rules(
    telegram: TelegramStandIn,
    client: httpx.AsyncClient,
    url: str,
    secret: str | None,
    description: str,
) -> None:
    """A non-loopback webhook must be https on 80/88/443/8443 with a valid secret; each
    violation answers 400 with the Bot API server's text and sets nothing."""
    params = {"url": url} if secret is None else {"url": url, "secret_token": secret}
    response = await client.post("/setWebhook", json=params)
    assert response.status_code == 400
    assert description in response.json()["description"]
    assert response.json()["description"].startswith("Bad Request: ")
    assert telegram.webhook.url == ""


@pytest.mark.parametrize(
    "url",
    [
        "https://bot.example.com/hook",
        "https://bot.example.com:8443/hook",
        "bot.example.com:88/hook",  # no scheme: taken as https, as the server does
        "http://127.0.0.1:9/hook",
        "http://127.3.2.1:65000/hook",
        "http://localhost:1234/hook",
        "http://[::1]:5000/hook",
    ],
)
async def test_set_webhook_accepts_https_on_webhook_ports_and_any_loopback_url(
    telegram: TelegramStandIn, client: httpx.AsyncClient, url: str
) -> None:
    """https on an allowed port is accepted, and so is a loopback URL with http and any port (as
    a local Bot API server accepts); an empty secret is no secret."""
    response = await client.post("/setWebhook", json={"url": url, "secret_token": ""})
    assert response.json() == {"ok": True, "result": True}
    assert telegram.webhook.url == url
    assert telegram.webhook.secret is None


async def test_a_leftover_webhook_is_never_contacted_and_keeps_updates(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A webhook on a non-loopback URL (set with plain setWebhook) fails every delivery with
    "Connection refused" without any connection; updates stay pending and getUpdates is 409."""
    await client.post("/setWebhook", json={"url": "https://old-deploy.example.com/hook"})
    telegram.push_text(CHAT, CHAT, "lost?")
    await async_wait_for(lambda: telegram.webhook.failures >= 2)
    info = (await client.get("/getWebhookInfo")).json()["result"]
    conflict = await client.post("/getUpdates", json={})
    assert info["url"] == "https://old-deploy.example.com/hook"
    assert info["last_error_message"] == "Connection refused"
    assert "ip_address" not in info
    assert info["pending_update_count"] == 1
    assert telegram.webhook.delivered == 0
    assert conflict.status_code == 409
    await client.post("/deleteWebhook", json={"drop_pending_updates": False})
    kept = (await client.post("/getUpdates", json={})).json()["result"]
    assert [u["message"]["text"] for u in kept] == ["lost?"]
