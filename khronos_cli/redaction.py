"""Secrets, and the one scrubber that keeps them out of everything khronos writes.

A :class:`Secret` wraps a token or key from the environment; its ``str()`` and ``repr()`` never
show it. A :class:`Scrubber` replaces secrets in text with ``***``: every configured secret (of
six characters or more, longest first, and a bot token's half after the colon on its own), and
whatever has the shape of one even when nobody configured it — a Telegram bot token (also inside
a ``/bot<token>/`` path), an ``sk-`` API key (Anthropic's and OpenAI's shape), a password in a
URL (``redis://user:password@host``). Everything that writes text which may hold a secret passes
it through a scrubber: the log (``runtime.logs``), the errors the upstream clients raise from what
an upstream said, the outbox's stored ``last_error``, and config errors.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "Scrubber", "Secret", "scrub"]

MASK = "***"
MIN_SECRET = 6  # shorter configured secrets (test tokens like "1:x") would mask ordinary text
_SHAPES = re.compile(
    r"(?<=/bot)\d+:[A-Za-z0-9_-]+"  # a Bot API path: /bot<token>/method, /file/bot<token>/path
    r"|\b\d{3,}:[A-Za-z0-9_-]{30,}"  # a bot token: the bot id, a colon, 35 characters
    r"|\b(?P<key>sk-)[A-Za-z0-9_-]{12,}"  # an Anthropic or OpenAI API key
    r"|(?<=://)(?P<user>[^\s:/@]*):[^\s/@]+(?=@)"  # user:password in a URL
)


class Secret:
    """A token or key from the environment; ``str()``/``repr()`` never reveal it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class Scrubber:
    """``scrubber(text)``: ``text`` with every known secret, and every secret-shaped word,
    replaced by ``***``."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[Secret | str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            value = secret.reveal() if isinstance(secret, Secret) else secret
            values.add(value)
            if ":" in value:  # a bot token: its secret half can travel alone
                values.add(value.split(":", 1)[1])
        self._secrets = sorted((v for v in values if len(v) >= MIN_SECRET), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _SHAPES.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    if match["key"]:
        return match["key"] + MASK
    if match["user"] is not None:
        return f"{match['user']}:{MASK}"
    return MASK


scrub = Scrubber()  # the shapes alone, for text that meets no configured secret
