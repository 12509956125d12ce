"""Reading an incoming update: what it is, and whether the bot should answer it.

What Telegram really sends (REFERENCE.md §7): every bot receives service messages in its groups
(joins, leaves, pins, title changes, ``migrate_*``) whatever its privacy mode; edited messages and
other update kinds arrive when asked for (or were asked for before); with privacy mode on, group
commands arrive as ``/cmd@thisbot``. The rules:

- only a ``message`` can be answered; anything else (``edited_message``, ``callback_query``, ...)
  is recorded and left alone;
- a message with no content (text, caption, voice or any media) is a service message: no answer;
- in a private chat every other message is answered;
- in a group or supergroup (``[bot] groups``): ``addressed`` (the default) answers commands for
  this bot (``/cmd`` or ``/cmd@thisbot``, never ``/cmd@otherbot``), messages that mention it
  (``@thisbot``, or a text mention of its user) and replies to its own messages; ``all`` answers
  every message with content; ``off`` answers none.

Entity offsets and lengths count UTF-16 code units (Telegram's rule), so a mention after an emoji
is found where it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["CONTENT_KEYS", "Identity", "Incoming", "deserves_answer", "read_update"]

# A message with none of these is a service message (a join, a pin, a migration, ...).
CONTENT_KEYS = frozenset(
    {
        "text",
        "caption",
        "voice",
        "audio",
        "photo",
        "sticker",
        "video",
        "video_note",
        "document",
        "animation",
        "contact",
        "location",
        "venue",
        "poll",
        "dice",
        "game",
        "story",
    }
)
GroupPolicy = Literal["addressed", "all", "off"]


@dataclass(frozen=True)
class Identity:
    """The bot's own user, from ``getMe``."""

    id: int
    username: str


class Incoming(NamedTuple):
    """An update, read: its ``message`` (None for other kinds), chat and sender. A tuple: one
    is made per update, and a frozen dataclass sets each field through ``object.__setattr__``."""

    kind: str
    message: dict[str, Any] | None
    chat_id: int
    chat_type: str
    user_id: int

    @property
    def private(self) -> bool:
        return self.chat_type == "private"

    @property
    def migration(self) -> tuple[int, int] | None:
        """``(old, new)`` chat ids when this is a group's upgrade to a supergroup."""
        message = self.message or {}
        new = _int(message.get("migrate_to_chat_id"))
        if new is not None:
            return self.chat_id, new
        old = _int(message.get("migrate_from_chat_id"))
        if old is not None:
            return old, self.chat_id
        return None


def read_update(update: dict[str, Any], chat_id: int) -> Incoming:
    """What ``update`` (journaled for ``chat_id``) is."""
    message = update.get("message")
    if not isinstance(message, dict):
        kind = next((k for k in update if k != "update_id"), "unknown")
        return Incoming(kind, None, chat_id, "", chat_id)
    chat = message.get("chat")
    sender = message.get("from")
    chat_type = str(chat.get("type", "")) if isinstance(chat, dict) else ""
    user_id = _int(sender.get("id")) if isinstance(sender, dict) else None
    return Incoming("message", message, chat_id, chat_type, chat_id if user_id is None else user_id)


def deserves_answer(incoming: Incoming, me: Identity | None, groups: GroupPolicy) -> bool:
    """Whether the bot answers ``incoming`` (``me`` is needed only for group messages)."""
    message = incoming.message
    if message is None or CONTENT_KEYS.isdisjoint(message):
        return False
    if incoming.private:
        return True
    if incoming.chat_type not in ("group", "supergroup") or groups == "off":
        return False
    if groups == "all":
        return True
    if me is None:
        raise ValueError("group messages need the bot's identity (getMe)")
    return addressed(message, me)


def addressed(message: dict[str, Any], me: Identity) -> bool:
    """A command for this bot, a mention of it, or a reply to one of its messages."""
    replied = message.get("reply_to_message")
    if isinstance(replied, dict):
        author = replied.get("from")
        if isinstance(author, dict) and author.get("id") == me.id:
            return True
    text = message.get("text") or message.get("caption") or ""
    if not isinstance(text, str):
        return False
    name = me.username.lower()
    if text.startswith("/"):
        _, at, target = text.split(maxsplit=1)[0].partition("@")
        if at:
            return target.lower() == name
        return True
    entities = message.get("entities") or message.get("caption_entities")
    if not isinstance(entities, list):
        return f"@{name}" in text.lower()
    for entity in entities:
        if not isinstance(entity, dict):
            continue
        kind = entity.get("type")
        if kind == "mention" and _utf16_slice(text, entity).lower() == f"@{name}":
            return True
        if kind == "text_mention" and (entity.get("user") or {}).get("id") == me.id:
            return True
    return False


def _utf16_slice(text: str, entity: dict[str, Any]) -> str:
    offset, length = _int(entity.get("offset")), _int(entity.get("length"))
    if offset is None or length is None:
        return ""
    units = text.encode("utf-16-le")
    return units[2 * offset : 2 * (offset + length)].decode("utf-16-le", errors="replace")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
