"""What the sandbox Telegram sends besides users' texts: service messages and other updates.

**Service messages** are messages with no ``text``, only a field saying what happened in the chat.
Every bot in a group receives them, whatever its privacy mode, and none deserves an answer. The
builders return that field (and its legacy twins, which the Bot API server still sends: see
``telegram-bot-api/Client.cpp``, ``JsonMessage``):

===================== ============================================================================
new_chat_members      users who joined or were added, the bot itself included (with the legacy
                      ``new_chat_member`` / ``new_chat_participant``: the first of them)
left_chat_member      a user who left or was removed (with ``left_chat_participant``)
pinned_message        the pinned message (without its own ``reply_to_message``)
new_chat_title        the new title
group_chat_created    ``true``: the group was created with the bot in it
migrate_to_chat_id    in the old group: it became the supergroup with this id
migrate_from_chat_id  in the new supergroup: it was the group with this id
===================== ============================================================================

A ``sticker`` (:func:`sticker`) is no service message, but it too is a message with no text.

**Other updates** are not messages: ``callback_query`` (a button under a bot message pressed),
``my_chat_member`` (the bot's own membership changed: added, removed, blocked in a private chat)
and ``message_reaction`` (a reaction changed). Their builders return the update's body.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SERVICE_KINDS",
    "callback_query",
    "group_chat_created",
    "left_chat_member",
    "migrate_from",
    "migrate_to",
    "my_chat_member",
    "new_chat_members",
    "new_chat_title",
    "pinned_message",
    "reaction",
    "sticker",
]

SERVICE_KINDS = (
    "new_chat_members",
    "left_chat_member",
    "pinned_message",
    "new_chat_title",
    "group_chat_created",
    "migrate_to_chat_id",
    "migrate_from_chat_id",
)
Json = dict[str, Any]


def new_chat_members(users: list[Json]) -> Json:
    return {
        "new_chat_participant": users[0],
        "new_chat_member": users[0],
        "new_chat_members": users,
    }


def left_chat_member(user: Json) -> Json:
    return {"left_chat_participant": user, "left_chat_member": user}


def pinned_message(message: Json) -> Json:
    return {"pinned_message": {k: v for k, v in message.items() if k != "reply_to_message"}}


def new_chat_title(title: str) -> Json:
    return {"new_chat_title": title}


def group_chat_created() -> Json:
    return {"group_chat_created": True}


def migrate_to(chat_id: int) -> Json:
    return {"migrate_to_chat_id": chat_id}


def migrate_from(chat_id: int) -> Json:
    return {"migrate_from_chat_id": chat_id}


def callback_query(query_id: int, user: Json, message: Json, data: str) -> Json:
    """A button with ``data`` under ``message`` pressed by ``user``."""
    return {
        "id": str(query_id),
        "from": user,
        "message": message,
        "chat_instance": str(abs(int(message["chat"]["id"])) * 7919),
        "data": data,
    }


def my_chat_member(chat: Json, actor: Json, bot: Json, old: str, new: str, date: int) -> Json:
    """The bot's status in ``chat`` changed from ``old`` to ``new`` (``member``, ``kicked``, ...)
    by ``actor``: in a private chat, ``kicked`` is the user blocking the bot."""
    return {
        "chat": chat,
        "from": actor,
        "date": date,
        "old_chat_member": _member(bot, old, date),
        "new_chat_member": _member(bot, new, date),
    }


def _member(user: Json, status: str, date: int) -> Json:
    member: Json = {"user": user, "status": status}
    if status == "kicked":
        member["until_date"] = 0
    return member


def reaction(chat: Json, message_id: int, user: Json, emoji: str, date: int) -> Json:
    """``user`` reacted with ``emoji`` to message ``message_id`` of ``chat``."""
    return {
        "chat": chat,
        "message_id": message_id,
        "user": user,
        "date": date,
        "old_reaction": [],
        "new_reaction": [{"type": "emoji", "emoji": emoji}],
    }


def sticker(number: int, emoji: str) -> Json:
    """A ``Sticker`` object (a regular 512x512 sticker standing for ``emoji``)."""
    return {
        "file_id": f"sbx-sticker-{number}",
        "file_unique_id": f"sbxs{number}",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": emoji,
        "set_name": "KhronosSandbox",
        "file_size": 18_432,
    }
