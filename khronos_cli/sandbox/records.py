"""What the sandbox Telegram records: the user messages it was given and the bot's deliveries.

Both are frozen dataclasses with a JSON form, so the same records serve the Python API (tests in
the stand-in's process), the admin HTTP API (tests driving a bot in another process) and the
:class:`~khronos_cli.sandbox.ledger.Ledger` that joins them. Times (``at``) come from the
stand-in's clock (monotonic by default), so latencies are differences of two ``at`` values taken
in the same process.

A sandbox voice note carries its own transcript: :func:`voice_file_bytes` makes the "audio" file
the Telegram stand-in serves, and :func:`transcript_of` is how the OpenAI stand-in transcribes it
back, so a voice round trip is checkable end to end without any real audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "VOICE_MAGIC",
    "Delivery",
    "UserMessage",
    "transcript_of",
    "voice_file_bytes",
]

VOICE_MAGIC = b"OggS\x00KHRONOS-SANDBOX-VOICE/1\n"


def voice_file_bytes(transcript: str) -> bytes:
    """The bytes of a sandbox voice note whose transcription is ``transcript``."""
    return VOICE_MAGIC + transcript.encode("utf-8")


def transcript_of(data: bytes) -> str | None:
    """The transcript a sandbox voice note carries, or None for any other bytes."""
    if not data.startswith(VOICE_MAGIC):
        return None
    try:
        return data[len(VOICE_MAGIC) :].decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class UserMessage:
    """A message a (simulated) user sent to the bot, as pushed into the Telegram stand-in."""

    update_id: int
    message_id: int
    chat_id: int
    user_id: int
    text: str  # the text, or a voice note's transcript
    kind: Literal["text", "voice"]
    at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserMessage:
        return cls(
            update_id=int(data["update_id"]),
            message_id=int(data["message_id"]),
            chat_id=int(data["chat_id"]),
            user_id=int(data["user_id"]),
            text=str(data["text"]),
            kind="voice" if data["kind"] == "voice" else "text",
            at=float(data["at"]),
        )


@dataclass(frozen=True)
class Delivery:
    """A message the bot sent (``sendMessage`` accepted by the stand-in)."""

    message_id: int
    chat_id: int
    text: str
    reply_to_message_id: int | None
    parse_mode: str | None
    at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delivery:
        reply_to = data.get("reply_to_message_id")
        parse_mode = data.get("parse_mode")
        return cls(
            message_id=int(data["message_id"]),
            chat_id=int(data["chat_id"]),
            text=str(data["text"]),
            reply_to_message_id=None if reply_to is None else int(reply_to),
            parse_mode=None if parse_mode is None else str(parse_mode),
            at=float(data["at"]),
        )
