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


async def test_users_actions_over_http(admin: httpx.AsyncClient, bot: httpx.AsyncClient) -> None:
    """POST /_sandbox/messages (sticker, big voice, reply), /service (the bot added, a title) and
    /updates (an edit, a callback query) queue the updates a bot then polls."""
    group, user = -4001, 1001
    added = await admin.post(
        "/service",
        json={"chat_id": group, "user_id": user, "kind": "new_chat_members", "bot": True},
    )
    title = await admin.post(
        "/service",
        json={"chat_id": group, "user_id": user, "kind": "new_chat_title", "title": "Nós"},
    )
    text = await admin.post("/messages", json={"chat_id": group, "user_id": user, "text": "oi"})
    answer = (await bot.post("/sendMessage", json={"chat_id": group, "text": "olá"})).json()
    bot_message = answer["result"]["message_id"]
    reply = await admin.post(
        "/messages",
        json={"chat_id": group, "user_id": user, "text": "e aí", "reply_to": bot_message},
    )
    sticker = await admin.post("/messages", json={"chat_id": user, "sticker": "🐱"})
    voice = await admin.post("/messages", json={"chat_id": user, "voice": "x", "file_size": 10**8})
    edit = await admin.post(
        "/updates",
        json={
            "kind": "edited_message",
            "chat_id": group,
            "message_id": text.json()["message_id"],
            "text": "oi!",
        },
    )
    press = await admin.post(
        "/updates",
        json={
            "kind": "callback_query",
            "chat_id": group,
            "user_id": user,
            "message_id": bot_message,
        },
    )
    for answered in (added, title, text, reply, sticker, voice, edit, press):
        assert answered.status_code == 200, answered.text
    polled = (await bot.post("/getUpdates", json={})).json()["result"]
    kinds = [next(k for k in u if k != "update_id") for u in polled]
    assert kinds == ["my_chat_member"] + ["message"] * 6 + ["edited_message", "callback_query"]
    messages = (await admin.get("/messages")).json()["items"]
    assert [(m["kind"], m["expects_answer"]) for m in messages] == [
        ("my_chat_member", False),
        ("service", False),
        ("service", False),
        ("text", False),
        ("text", True),
        ("sticker", True),
        ("voice", True),
        ("edit", False),
        ("callback_query", False),
    ]
    bad = await admin.post("/updates", json={"kind": "poll", "chat_id": group})
    assert bad.status_code == 400 and "unknown update kind" in bad.json()["error"]


async def test_block_and_migrate_over_http_reach_the_ledger(
    admin: httpx.AsyncClient, bot: httpx.AsyncClient
) -> None:
    """POST /_sandbox/block makes the user's message undeliverable (not unanswered) and
    /migrate moves a group; /chats and /ledger show both."""
    await admin.post("/messages", json={"chat_id": 7, "text": "tchau"})
    blocked = await admin.post("/block", json={"user_id": 7})
    refused = await bot.post("/sendMessage", json={"chat_id": 7, "text": "r"})
    asked = await admin.post("/messages", json={"chat_id": -55, "user_id": 7, "text": "/help"})
    moved = (await admin.post("/migrate", json={"chat_id": -55})).json()
    resent = await bot.post(
        "/sendMessage", json={"chat_id": moved["migrate_to_chat_id"], "text": "ajuda"}
    )
    chats = (await admin.get("/chats")).json()
    report = (await admin.get("/ledger")).json()
    again = await admin.post("/migrate", json={"chat_id": -55})
    assert blocked.json()["blocked"] is True and refused.status_code == 403
    assert asked.status_code == resent.status_code == 200
    assert moved["chat_id"] == -55 and moved["migrate_to_chat_id"] < -(10**12)
    assert chats["migrations"] == {"-55": moved["migrate_to_chat_id"]}
    assert chats["blocked"] == [7]
    assert report["undeliverable"] == [1] and report["unanswered"] == []
    assert report["answered"] == 1 and report["exactly_once"] is True
    assert again.status_code == 400 and "already upgraded" in again.json()["error"]
