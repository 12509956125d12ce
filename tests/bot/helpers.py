"""Helpers for the store and bot tests: a hand-moved clock, update payloads, one-part replies."""

from __future__ import annotations

from typing import Any

from khronos_cli.bot.store import Store

CHAT = 4242


class FakeClock:
    """Unix time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


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
