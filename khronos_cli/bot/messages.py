"""What the bot says, and how a reply fits Telegram's messages.

Telegram refuses a text over 4,096 characters, counted in Unicode code points (the Bot API
server's ``utf8_length``: Python's ``len``), with ``400 Bad Request: message is too long``.
:func:`split_message` cuts a longer reply into ordered parts at the best boundary it finds in each
part's last half: a paragraph break, else a line break, else a space, else (one unbroken word of
thousands of characters) at the limit itself. Parts are stripped of the whitespace they were cut
at and are never empty, as Telegram wants them.
"""

from __future__ import annotations

__all__ = [
    "CUT_NOTE",
    "FALLBACK_TEXT",
    "HELP_TEXT",
    "MAX_MESSAGE",
    "RESET_TEXT",
    "START_TEXT",
    "UNSUPPORTED_TEXT",
    "VOICE_EMPTY_TEXT",
    "VOICE_TOO_BIG_TEXT",
    "split_message",
]

MAX_MESSAGE = 4096  # Telegram's limit, in code points

FALLBACK_TEXT = "IA indisponível agora. Tente novamente em alguns segundos."
START_TEXT = "Olá! Send me a message or a voice note and I will answer. /help for more."
HELP_TEXT = (
    "Send text or a voice note and I answer with an AI model.\n"
    "In a group, mention me, reply to me or use a command.\n"
    "/reset forgets this conversation.\n/help shows this message."
)
RESET_TEXT = "Conversation forgotten. Let's start again."
UNSUPPORTED_TEXT = "I can read text messages and voice notes."
VOICE_TOO_BIG_TEXT = (
    "That voice note is too long for me: Telegram lets bots download files of up to 20 MB. "
    "Could you send a shorter one, or type it?"
)
VOICE_EMPTY_TEXT = "I could not hear any words in that voice note. Could you try again, or type it?"
CUT_NOTE = "\n\n[…] (cut short: the answer reached its length limit)"
_BOUNDARIES = ("\n\n", "\n", " ")


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """``text`` as ordered parts of at most ``limit`` code points each (one part if it fits)."""
    if limit < 2:
        raise ValueError(f"limit={limit}: expected 2 or more")
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        cut = _cut_point(text, limit)
        head, text = text[:cut].rstrip(), text[cut:].lstrip()
        if head:
            parts.append(head)
    if text:
        parts.append(text)
    return parts


def _cut_point(text: str, limit: int) -> int:
    """Where to end the next part: after the last boundary in ``text[limit // 2 : limit]``."""
    for boundary in _BOUNDARIES:
        at = text.rfind(boundary, limit // 2, limit)
        if at != -1:
            return at + len(boundary)
    return limit
