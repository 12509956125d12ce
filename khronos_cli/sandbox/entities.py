"""Message entities, as Telegram attaches them to the text (or caption) a user sends.

Telegram parses a user's text and sends what it found as ``entities``: each one a
``{"type", "offset", "length"}`` whose offset and length count **UTF-16 code units** (an emoji
outside the Basic Multilingual Plane counts 2), while the 4,096 limit of a message counts code
points. The sandbox finds the three kinds a bot acts on:

- ``bot_command``: ``/cmd`` or ``/cmd@somebot`` (1–64 characters of ``[A-Za-z0-9_]``, then an
  optional ``@username``), not glued to a word, a ``/`` or another command;
- ``mention``: ``@username`` (5–32 characters of ``[A-Za-z0-9_]``) not glued to a word;
- ``hashtag``: ``#word`` with at least one letter (the LLM stand-ins' directives look like this).

:func:`command_target` and :func:`mentions` read them back the way a bot does: with offsets in
UTF-16 units, so a bot that slices a Python ``str`` by them gets them wrong after an emoji.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["command_target", "find_entities", "mentions", "text_fields", "utf16_length"]

Json = dict[str, Any]

_PATTERNS = (
    (
        "bot_command",
        re.compile(r"(?<![\w/<>@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>@])"),
    ),
    ("mention", re.compile(r"(?<![\w@/])@[A-Za-z0-9_]{5,32}(?![\w@])")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d]\w*")),
)


def utf16_length(text: str) -> int:
    """How many UTF-16 code units ``text`` takes (Telegram's unit for entity offsets)."""
    return len(text.encode("utf-16-le")) // 2


def find_entities(text: str) -> list[Json]:
    """The ``bot_command``, ``mention`` and ``hashtag`` entities of ``text``, in text order."""
    found: list[tuple[int, int, str]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < other_end and other_start < end for other_start, other_end in taken):
                continue  # "/cmd@somebot" holds no separate mention
            taken.append((start, end))
            found.append((start, end, kind))
    found.sort()
    return [
        {
            "type": kind,
            "offset": utf16_length(text[:start]),
            "length": utf16_length(text[start:end]),
        }
        for start, end, kind in found
    ]


def text_fields(text: str, *, caption: bool = False) -> Json:
    """``{"text": text, "entities": [...]}`` as a Message carries them (``caption`` and
    ``caption_entities`` for a caption); no ``entities`` key when there are none."""
    key, entities = ("caption", "caption_entities") if caption else ("text", "entities")
    found = find_entities(text)
    return {key: text, entities: found} if found else {key: text}


def _entity_text(text: str, entity: Json) -> str:
    """The part of ``text`` an entity covers, found by UTF-16 offsets as a bot must."""
    units = text.encode("utf-16-le")
    start = int(entity["offset"]) * 2
    return units[start : start + int(entity["length"]) * 2].decode("utf-16-le")


def command_target(text: str, entities: list[Json]) -> tuple[str, str | None] | None:
    """The command that starts ``text`` and the bot it names (``/help@x_bot`` -> ``("help",
    "x_bot")``, bare ``/help`` -> ``("help", None)``); None when the text is no command."""
    for entity in entities:
        if entity["type"] == "bot_command" and entity["offset"] == 0:
            command, _, target = _entity_text(text, entity)[1:].partition("@")
            return command, (target or None)
    return None


def mentions(text: str, entities: list[Json]) -> list[str]:
    """The usernames ``text`` mentions (without the ``@``)."""
    return [_entity_text(text, e)[1:] for e in entities if e["type"] == "mention"]
