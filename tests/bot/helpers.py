"""Helpers for the store and bot tests: update payloads, one-part replies, a unix-time clock."""

from __future__ import annotations

from typing import Any

from khronos_cli.bot.store import Store

CHAT = 4242
UNIX_NOW = 1_800_000_000.0  # where the store tests' hand-moved clock starts (unix time)


async def reply_id(store: Store, *args: Any, **kwargs: Any) -> int:
    """The outbox id of a one-part reply."""
    [message] = await store.record_reply(*args, **kwargs)
    return message.id


def update(update_id: int, text: str = "hello", chat_id: int = CHAT) -> dict[str, object]:
    """A Telegram update payload as getUpdates returns it."""
    return {
        "update_id": update_id,
        "message": {"message_id": update_id + 500, "chat": {"id": chat_id}, "text": text},
    }
