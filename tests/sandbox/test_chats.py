"""The Telegram stand-in's world over real HTTP: service messages, edits, other updates,
entities in UTF-16 units, replies, and which messages deserve an answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from khronos_cli.sandbox import SANDBOX_TOKEN, FloodLimits, TelegramStandIn
from khronos_cli.sandbox.entities import command_target, find_entities, mentions

USER, GROUP, SUPERGROUP = 1001, -4001, -1_000_000_004_001
BOT = "khronos_sandbox_bot"


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(flood_limits=FloodLimits.off()) as stand_in:
        yield stand_in


@pytest.fixture
async def client(telegram: TelegramStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{telegram.base_url}/bot{SANDBOX_TOKEN}") as http:
        yield http


async def poll(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.post("/getUpdates", json=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["result"]
    return result


async def send(client: httpx.AsyncClient, chat_id: int, text: str, **params: Any) -> Any:
    return await client.post("/sendMessage", json={"chat_id": chat_id, "text": text, **params})


async def test_service_messages_have_no_text_and_the_documented_field(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """Joins, leaves, pins, titles and group creation arrive as messages with from, chat, date,
    message_id and their field (plus the legacy twins), never with a text."""
    chats = telegram.chats
    pinned = chats.push_text(GROUP, USER, "regras do grupo")
    chats.push_service(GROUP, USER, "group_chat_created")
    chats.push_service(GROUP, USER, "new_chat_members", users=[1002, 1003])
    chats.push_service(GROUP, USER, "left_chat_member", users=[1003])
    chats.push_service(GROUP, USER, "pinned_message", message_id=pinned)
    chats.push_service(GROUP, USER, "new_chat_title", title="Grupo novo")
    messages = [u["message"] for u in await poll(client)][1:]
    for message in messages:
        assert {"message_id", "from", "chat", "date"} <= message.keys()
        assert "text" not in message
        assert message["from"]["id"] == USER
    created, joined, left, pin, title = messages
    assert created["group_chat_created"] is True
    assert [u["id"] for u in joined["new_chat_members"]] == [1002, 1003]
    assert joined["new_chat_member"]["id"] == joined["new_chat_participant"]["id"] == 1002
    assert left["left_chat_member"]["id"] == left["left_chat_participant"]["id"] == 1003
    assert pin["pinned_message"]["text"] == "regras do grupo"
    assert title["new_chat_title"] == "Grupo novo"
    assert title["chat"]["title"] == "Grupo novo"
    assert [m.expects_answer for m in telegram.pushed] == [False] * 6
    assert {m.kind for m in telegram.pushed[1:]} == {"service"}


async def test_the_bot_being_added_uses_its_own_user_from_get_me(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """Adding the bot sends my_chat_member (left -> member) and new_chat_members naming the bot
    exactly as getMe describes it."""
    telegram.chats.add_bot(GROUP, USER)
    me = (await client.get("/getMe")).json()["result"]
    membership, added = await poll(client)
    assert membership["my_chat_member"]["old_chat_member"]["status"] == "left"
    assert membership["my_chat_member"]["new_chat_member"]["status"] == "member"
    (bot,) = added["message"]["new_chat_members"]
    assert bot == {key: me[key] for key in ("id", "is_bot", "first_name", "username")}
    assert bot["is_bot"] is True


async def test_service_messages_refuse_private_chats_and_unknown_kinds(
    telegram: TelegramStandIn,
) -> None:
    """A service message in a private chat, of an unknown kind, or a migrate_* by hand is
    refused."""
    with pytest.raises(ValueError, match="into groups"):
        telegram.chats.push_service(USER, USER, "new_chat_title", title="x")
    with pytest.raises(ValueError, match="unknown service message"):
        telegram.chats.push_service(GROUP, USER, "migrate_to_chat_id")
    assert telegram.pushed == []


async def test_an_edit_is_an_edited_message_with_edit_date(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """An edit queues edited_message: the same message id, the new text and an edit_date."""
    message_id = telegram.push_text(USER, USER, "helo")
    telegram.chats.push_edit(USER, message_id, "hello @" + BOT)
    _, edited = await poll(client)
    body = edited["edited_message"]
    assert body["message_id"] == message_id
    assert body["text"] == "hello @" + BOT
    assert body["edit_date"] >= body["date"]
    assert body["entities"] == [{"type": "mention", "offset": 6, "length": 20}]
    assert (telegram.pushed[-1].kind, telegram.pushed[-1].expects_answer) == ("edit", False)


async def test_other_updates_follow_allowed_updates_and_its_default(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """By default callback queries and channel posts are created but reactions
    are not; a bot asking only for messages gets none of them."""
    bot_message = (await send(client, USER, "pick one")).json()["result"]["message_id"]
    chats = telegram.chats
    chats.push_callback_query(USER, USER, bot_message, "yes")
    chats.push_reaction(USER, USER, bot_message, "🔥")
    chats.push_channel_post(SUPERGROUP, "news")
    kinds = [next(k for k in u if k != "update_id") for u in await poll(client)]
    assert kinds == ["callback_query", "channel_post"]
    query = (await poll(client))[0]["callback_query"]
    assert query["message"]["message_id"] == bot_message and query["data"] == "yes"
    await poll(client, offset=99, allowed_updates=["message", "message_reaction"])
    chats.push_reaction(USER, USER, bot_message, "👍")
    chats.push_callback_query(USER, USER, bot_message, "no")
    (reaction,) = await poll(client)
    assert reaction["message_reaction"]["new_reaction"] == [{"type": "emoji", "emoji": "👍"}]
    assert not any(m.expects_answer for m in telegram.pushed)


def test_entities_count_utf16_units_after_an_emoji() -> None:
    """An emoji outside the BMP before a mention moves its offset by 2 UTF-16 units, not 1."""
    text = f"🚀 oi @{BOT} e /help"
    entities = find_entities(text)
    assert entities == [
        {"type": "mention", "offset": 6, "length": 20},
        {"type": "bot_command", "offset": 29, "length": 5},
    ]
    assert text.index("@") == 5  # a bot slicing the str by the offset would be one off
    assert mentions(text, entities) == [BOT]


def test_commands_carry_their_target_bot() -> None:
    """/cmd@somebot is one bot_command entity (no separate mention); the target is read back."""
    assert find_entities("/help@OtherBot now") == [
        {"type": "bot_command", "offset": 0, "length": 14}
    ]
    assert command_target("/help@OtherBot now", find_entities("/help@OtherBot now")) == (
        "help",
        "OtherBot",
    )
    assert command_target("/start", find_entities("/start")) == ("start", None)
    assert command_target("a/b c", find_entities("a/b c")) is None
    assert find_entities("#long resposta") == [{"type": "hashtag", "offset": 0, "length": 5}]


async def test_messages_carry_entities_and_replies(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A pushed command carries its bot_command entity; a reply to the bot's message carries
    reply_to_message with the bot's message (not nested further)."""
    asked = telegram.push_text(GROUP, USER, f"/ask@{BOT} 2+2?")
    sent = (await send(client, GROUP, "4", reply_parameters={"message_id": asked})).json()
    answer_id = sent["result"]["message_id"]
    telegram.push_text(GROUP, USER, "obrigado!", reply_to=answer_id)
    command, thanks = (u["message"] for u in await poll(client))
    assert command["entities"] == [{"type": "bot_command", "offset": 0, "length": 24}]
    replied = thanks["reply_to_message"]
    assert replied["message_id"] == answer_id and replied["from"]["username"] == BOT
    assert "reply_to_message" not in replied
    with pytest.raises(ValueError, match="to reply to"):
        telegram.push_text(GROUP, USER, "?", reply_to=9999)


@pytest.mark.parametrize(
    ("chat_id", "text", "expects", "kind"),
    [
        (USER, "olá", True, "text"),
        (USER, "/help", True, "command"),
        (GROUP, "/help", True, "command"),
        (GROUP, f"/help@{BOT}", True, "command"),
        (GROUP, "/help@OtherBot", False, "command"),
        (GROUP, f"ei @{BOT}, tudo bem?", True, "text"),
        (GROUP, "@someone_else olha isso", False, "text"),
        (GROUP, "conversa entre humanos", False, "text"),
        (SUPERGROUP, f"@{BOT.upper()} oi", True, "text"),
    ],
)
async def test_which_messages_deserve_an_answer(
    telegram: TelegramStandIn, chat_id: int, text: str, expects: bool, kind: str
) -> None:
    """Private chats: everything; groups: commands to this bot (bare or @it), mentions of it."""
    telegram.push_text(chat_id, USER, text)
    (message,) = telegram.pushed
    assert (message.expects_answer, message.kind) == (expects, kind)


async def test_replies_to_the_bot_and_stickers(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """In a group a reply to the bot deserves an answer and a reply to a user does not; a
    sticker deserves one in a private chat only."""
    other = telegram.push_text(GROUP, 1002, "alguém?")
    ours = (await send(client, GROUP, "eu")).json()["result"]["message_id"]
    telegram.push_text(GROUP, USER, "respondendo ao bot", reply_to=ours)
    telegram.push_text(GROUP, USER, "respondendo à pessoa", reply_to=other)
    telegram.chats.push_sticker(USER, USER, "😀")
    telegram.chats.push_sticker(GROUP, USER, "😀")
    verdicts = [(m.kind, m.expects_answer) for m in telegram.pushed[1:]]
    assert verdicts == [("text", True), ("text", False), ("sticker", True), ("sticker", False)]
    sticker = (await poll(client))[-2]["message"]
    assert "text" not in sticker and sticker["sticker"]["emoji"] == "😀"
