"""What the sandbox Telegram records: the user messages it was given and the bot's deliveries.

Both are frozen dataclasses with a JSON form, so the same records serve the Python API (tests in
the stand-in's process), the admin HTTP API (tests driving a bot in another process) and the
:class:`~khronos_cli.sandbox.ledger.Ledger` that joins them. Times (``at``) come from the
stand-in's clock (monotonic by default), so latencies are differences of two ``at`` values taken
in the same process.

A :class:`UserMessage` says what kind of thing the user did (``kind``: a text, a voice note, a
command, a sticker, a service message such as a join, an edit, a non-message update such as a
callback query) and whether it deserves an answer (``expects_answer``), decided by the stand-in
when it is pushed, by the rules written down in :mod:`~khronos_cli.sandbox.ledger`.

A sandbox voice note carries its own transcript: :func:`voice_file_bytes` makes the "audio" file
the Telegram stand-in serves, and :func:`transcript_of` is how the OpenAI stand-in transcribes it
back, so a voice round trip is checkable end to end without any real audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

__all__ = [
    "KEYED_KINDS",
    "VOICE_MAGIC",
    "Delivery",
    "MessageKind",
    "UserMessage",
    "transcript_of",
    "voice_file_bytes",
]

MessageKind = Literal[
    "text",
    "voice",
    "command",
    "sticker",
    "service",
    "edit",
    "channel_post",
    "callback_query",
    "my_chat_member",
    "message_reaction",
]
MESSAGE_KINDS: tuple[str, ...] = get_args(MessageKind)
# Kinds that are messages of their own, with a message id nobody else has: the bot could reply to
# them. An edit, a callback query or a reaction is *about* an existing message (same id).
KEYED_KINDS = frozenset({"text", "voice", "command", "sticker", "service", "channel_post"})

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
    message_id: int  # for an edit, a callback query or a reaction: the message it is about
    chat_id: int
    user_id: int
    # The text (a voice note's transcript, a sticker's emoji; for a service message the field it
    # carries, e.g. "new_chat_title"; for other updates their data).
    text: str
    kind: MessageKind
    at: float
    expects_answer: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserMessage:
        kind = str(data["kind"])
        return cls(
            update_id=int(data["update_id"]),
            message_id=int(data["message_id"]),
            chat_id=int(data["chat_id"]),
            user_id=int(data["user_id"]),
            text=str(data["text"]),
            kind=cast(MessageKind, kind if kind in MESSAGE_KINDS else "text"),
            at=float(data["at"]),
            expects_answer=bool(data.get("expects_answer", True)),
        )


@dataclass(frozen=True)
class Delivery:
    """A message the bot sent (``sendMessage`` accepted by the stand-in).

    ``reply_to_message_id`` is the message the bot asked to reply to; ``reply_missing`` is True
    when that message was not in the chat and the message went out as no reply
    (``allow_sending_without_reply``): :attr:`replies_to` is what Telegram made of it."""

    message_id: int
    chat_id: int
    text: str
    reply_to_message_id: int | None
    parse_mode: str | None
    at: float
    reply_missing: bool = False

    @property
    def replies_to(self) -> int | None:
        """The message this one really replies to (None: it went out as no reply)."""
        return None if self.reply_missing else self.reply_to_message_id

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
            reply_missing=bool(data.get("reply_missing", False)),
        )
