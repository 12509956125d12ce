"""The Telegram stand-in's admin API under /_sandbox/: drive and inspect it from another process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from khronos_cli.sandbox import SANDBOX_TOKEN, FloodLimits, Ledger, TelegramStandIn


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(flood_limits=FloodLimits.off()) as stand_in:
        yield stand_in


@pytest.fixture
async def admin(telegram: TelegramStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{telegram.base_url}/_sandbox") as http:
        yield http


@pytest.fixture
async def bot(telegram: TelegramStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{telegram.base_url}/bot{SANDBOX_TOKEN}") as http:
        yield http


async def test_pushed_messages_reach_getupdates(
    admin: httpx.AsyncClient, bot: httpx.AsyncClient
) -> None:
    """POST /_sandbox/messages queues a text or voice message the bot then polls."""
    text = await admin.post("/messages", json={"chat_id": 5, "user_id": 6, "text": "oi"})
    voice = await admin.post("/messages", json={"chat_id": 5, "voice": "áudio"})
    assert text.json() == {"message_id": 1, "update_id": 1}
    assert voice.json() == {"message_id": 2, "update_id": 2}
    polled = (await bot.post("/getUpdates", json={})).json()["result"]
    assert polled[0]["message"]["text"] == "oi"
    assert polled[0]["message"]["from"]["id"] == 6
    assert polled[1]["message"]["voice"]["mime_type"] == "audio/ogg"


async def test_lists_page_with_after(admin: httpx.AsyncClient, bot: httpx.AsyncClient) -> None:
    """GET /_sandbox/messages and /deliveries return items and a next cursor for ?after=."""
    for text in ("a", "b"):
        await admin.post("/messages", json={"chat_id": 5, "text": text})
    await bot.post("/sendMessage", json={"chat_id": 5, "text": "r", "reply_to_message_id": 2})
    first = (await admin.get("/messages")).json()
    rest = (await admin.get("/messages", params={"after": 1})).json()
    deliveries = (await admin.get("/deliveries")).json()
    assert [m["text"] for m in first["items"]] == ["a", "b"]
    assert first["next"] == 2
    assert [m["text"] for m in rest["items"]] == ["b"]
    assert deliveries["items"][0]["reply_to_message_id"] == 2
    ledger = Ledger.from_json(first["items"], deliveries["items"]).report()
    assert (ledger.answered, ledger.unanswered) == (1, (1,))


async def test_ledger_endpoint_reports_the_join(
    admin: httpx.AsyncClient, bot: httpx.AsyncClient
) -> None:
    """GET /_sandbox/ledger reports answered, unanswered and duplicates over all messages."""
    for text in ("a", "b"):
        await admin.post("/messages", json={"chat_id": 5, "text": text})
    for _ in range(2):
        await bot.post("/sendMessage", json={"chat_id": 5, "text": "r", "reply_to_message_id": 1})
    report = (await admin.get("/ledger")).json()
    assert report["sent"] == 2
    assert report["unanswered"] == [2]
    assert report["duplicates"] == [1]
    assert report["exactly_once"] is False


async def test_stats_show_counters(
    telegram: TelegramStandIn, admin: httpx.AsyncClient, bot: httpx.AsyncClient
) -> None:
    """GET /_sandbox/stats shows pending updates, deliveries, 429s and requests per method."""
    await admin.post("/flood", json={"per_chat": "1/min"})
    await admin.post("/messages", json={"chat_id": 5, "text": "a"})
    await bot.post("/sendMessage", json={"chat_id": 5, "text": "r"})
    await bot.post("/sendMessage", json={"chat_id": 5, "text": "refused"})
    stats = (await admin.get("/stats")).json()
    assert stats["pending_update_count"] == 1
    assert stats["deliveries"] == 1
    assert stats["flood_rejections"] == 1 == telegram.flood_rejections
    assert stats["requests"] == {"sendmessage": 2}
    assert stats["flood_limits"]["per_chat"] == "1/min"
    assert stats["webhook"]["url"] == ""


async def test_failure_endpoint_injects_and_clears_faults(
    admin: httpx.AsyncClient, bot: httpx.AsyncClient
) -> None:
    """POST /_sandbox/failure sets a fault on chosen methods; mode "ok" clears it."""
    set_ = await admin.post(
        "/failure", json={"mode": "errors", "methods": ["getMe"], "status": 500}
    )
    failed = await bot.get("/getMe")
    await admin.post("/failure", json={"mode": "ok"})
    healed = await bot.get("/getMe")
    assert set_.json() == {"mode": "errors", "methods": ["getme"], "status": 500, "count": None}
    assert failed.status_code == 500
    assert healed.status_code == 200


async def test_flood_endpoint_switches_limits_off(
    telegram: TelegramStandIn, admin: httpx.AsyncClient
) -> None:
    """POST /_sandbox/flood sets the given limits, null switches one off, a bad rate is 400."""
    first = await admin.post("/flood", json={"per_chat": "2/s", "per_bot": "5/s"})
    second = await admin.post("/flood", json={"per_bot": None})
    bad = await admin.post("/flood", json={"per_group": "often"})
    assert first.json() == {"per_chat": "2/s", "per_group": None, "per_bot": "5/s"}
    assert second.json() == {"per_chat": "2/s", "per_group": None, "per_bot": None}
    assert telegram.flood.limits.to_json() == second.json()
    assert bad.status_code == 400
    assert "per_group" in bad.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/messages", {"chat_id": "five", "text": "x"}),
        ("POST", "/messages", {"chat_id": 5}),
        ("POST", "/messages", ["not", "an", "object"]),
        ("POST", "/failure", {"mode": "sideways"}),
        ("POST", "/failure", {"mode": "errors", "methods": "getMe"}),
        ("GET", "/deliveries?after=-1", None),
    ],
)
async def test_bad_admin_requests_are_400_and_change_nothing(
    telegram: TelegramStandIn, admin: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    """Malformed admin requests answer 400 with a JSON error and leave the stand-in as it was."""
    response = await admin.request(method, path, json=body)
    assert response.status_code == 400
    assert response.json()["error"]
    assert telegram.pushed == []
    assert telegram.failure.mode == "ok"
