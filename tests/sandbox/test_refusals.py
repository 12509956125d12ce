"""What the Telegram stand-in refuses as the real Bot API does: blocked users, upgraded groups,
replies to missing messages, files over 20 MB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from khronos_cli.sandbox import SANDBOX_TOKEN, FloodLimits, TelegramStandIn
from khronos_cli.sandbox.files import MAX_DOWNLOAD_SIZE
from khronos_cli.sandbox.records import transcript_of

USER, GROUP = 1001, -4001


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(flood_limits=FloodLimits.off()) as stand_in:
        yield stand_in


@pytest.fixture
async def client(telegram: TelegramStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{telegram.base_url}/bot{SANDBOX_TOKEN}") as http:
        yield http


async def send(client: httpx.AsyncClient, chat_id: int, text: str = "oi", **params: Any) -> Any:
    return await client.post("/sendMessage", json={"chat_id": chat_id, "text": text, **params})


async def test_a_user_who_blocked_the_bot_answers_403(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """After block, sendMessage and sendChatAction to that user are 403 "bot was blocked by the
    user" and nothing is delivered; other chats are served; unblock ends it."""
    telegram.chats.block(USER)
    refused = await send(client, USER)
    typing = await client.post("/sendChatAction", json={"chat_id": USER, "action": "typing"})
    other = await send(client, USER + 1)
    assert refused.status_code == 403
    assert refused.json() == {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    assert typing.status_code == 403
    assert other.status_code == 200
    assert [d.chat_id for d in telegram.deliveries] == [USER + 1]
    assert telegram.refusals["Forbidden: bot was blocked by the user"] == 2
    telegram.chats.unblock(USER)
    assert (await send(client, USER)).status_code == 200
    statuses = [
        u["my_chat_member"]["new_chat_member"]["status"]
        for u in (await client.post("/getUpdates")).json()["result"]
    ]
    assert statuses == ["kicked", "member"]


async def test_an_upgraded_group_answers_400_with_migrate_to_chat_id(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """migrate() returns a -100… id, sends migrate_to_chat_id in the old group and
    migrate_from_chat_id in the new one; sends to the old id are 400 with the new id."""
    telegram.push_text(GROUP, USER, "antes")
    new_id = telegram.chats.migrate(GROUP, user_id=USER)
    refused = await send(client, GROUP)
    typing = await client.post("/sendChatAction", json={"chat_id": GROUP, "action": "typing"})
    accepted = await send(client, new_id)
    assert str(new_id).startswith("-100") and new_id <= -(10**12)
    assert refused.status_code == 400
    assert refused.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": new_id},
    }
    assert typing.status_code == 400
    assert accepted.json()["result"]["chat"]["type"] == "supergroup"
    updates = (await client.post("/getUpdates")).json()["result"]
    _, to, from_ = (u["message"] for u in updates)
    assert (to["chat"]["id"], to["migrate_to_chat_id"]) == (GROUP, new_id)
    assert (from_["chat"]["id"], from_["migrate_from_chat_id"]) == (new_id, GROUP)
    assert "text" not in to and "text" not in from_


async def test_after_a_migration_users_write_in_the_supergroup(telegram: TelegramStandIn) -> None:
    """A message pushed to the old id lands in the new supergroup; a second upgrade and an
    upgrade of a supergroup are refused."""
    new_id = telegram.chats.migrate(GROUP)
    telegram.push_text(GROUP, USER, f"depois @{telegram.chats.bot['username']}")
    assert telegram.pushed[-1].chat_id == new_id
    with pytest.raises(ValueError, match="already upgraded"):
        telegram.chats.migrate(GROUP)
    with pytest.raises(ValueError, match="only a basic group"):
        telegram.chats.migrate(new_id)


async def test_a_reply_to_a_missing_message(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """Replying to a message not in the chat is 400 "message to be replied not found", unless
    allow_sending_without_reply: then it is sent as no reply."""
    old = telegram.push_text(GROUP, USER, f"/help@{telegram.chats.bot['username']}")
    new_id = telegram.chats.migrate(GROUP)
    strict = await send(client, new_id, reply_parameters={"message_id": old})
    legacy = await send(client, new_id, reply_to_message_id=old)
    lenient = await send(
        client, new_id, reply_parameters={"message_id": old, "allow_sending_without_reply": True}
    )
    for refused in (strict, legacy):
        assert refused.status_code == 400
        assert refused.json()["description"] == "Bad Request: message to be replied not found"
    assert lenient.status_code == 200
    assert "reply_to_message" not in lenient.json()["result"]
    (delivery,) = telegram.deliveries
    assert (delivery.chat_id, delivery.reply_to_message_id) == (new_id, old)
    assert delivery.reply_missing and delivery.replies_to is None


async def test_voice_notes_carry_duration_and_size_and_over_20_mb_cannot_be_downloaded(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A voice note has duration and file_size; one declared over 20 MB is not allocated and
    getFile answers 400 "file is too big"; an empty transcript round-trips as empty."""
    telegram.push_voice(USER, USER, "")
    telegram.push_voice(USER, USER, "grande demais", file_size=MAX_DOWNLOAD_SIZE + 1)
    small, big = (
        u["message"]["voice"] for u in (await client.post("/getUpdates")).json()["result"]
    )
    assert small["duration"] >= 1 and small["file_size"] > 0
    assert big["file_size"] == MAX_DOWNLOAD_SIZE + 1 and big["duration"] > 60
    refused = await client.post("/getFile", json={"file_id": big["file_id"]})
    assert refused.status_code == 400
    assert refused.json()["description"] == "Bad Request: file is too big"
    meta = (await client.post("/getFile", json={"file_id": small["file_id"]})).json()["result"]
    async with httpx.AsyncClient(base_url=telegram.base_url) as files:
        audio = await files.get(f"/file/bot{SANDBOX_TOKEN}/{meta['file_path']}")
    assert transcript_of(audio.content) == ""
    assert [m.expects_answer for m in telegram.pushed] == [True, True]
