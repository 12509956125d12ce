"""What a configuration field may hold, written on the field itself.

Every field ``khronos.toml`` can set is declared with :func:`setting`, which records its kind —
a :class:`Duration`, :class:`Count`, :class:`Rates`, :class:`Percent`, :class:`Choice`,
:class:`Text`, :class:`ChatIds` or :class:`Url` with its range — as dataclass field metadata.
:func:`khronos_cli.config_values.check` reads the kind to parse and bound a value, so a new
field is one line in ``settings.py`` and cannot fall through to a wrong parser (a test checks
that every field has a kind).

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DAY",
    "HOUR",
    "MINUTE",
    "ChatIds",
    "Choice",
    "Count",
    "Duration",
    "Kind",
    "Percent",
    "Rates",
    "Text",
    "Url",
    "kind_of",
    "setting",
]

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


@dataclass(frozen=True)
class Duration:
    """Seconds (``30``, ``"500ms"``, ``"2m"``), finite, at most ``cap``; zero only when not
    ``positive``; the word ``"none"`` (None) only when ``optional``."""

    cap: float = HOUR
    positive: bool = True
    optional: bool = False


@dataclass(frozen=True)
class Count:
    """A whole number from 1 to ``cap``; ``"none"`` (None) only when ``optional``."""

    cap: int
    optional: bool = False


@dataclass(frozen=True)
class Rates:
    """A list of rates like ``["1/s", "20/min"]``."""


@dataclass(frozen=True)
class Percent:
    """A percentage above 0 and at most 100."""


@dataclass(frozen=True)
class Choice:
    """One of ``words``; with ``none``, the word ``"none"`` too (None)."""

    words: tuple[str, ...]
    none: bool = False


@dataclass(frozen=True)
class Text:
    """A non-empty string without NUL bytes."""


@dataclass(frozen=True)
class ChatIds:
    """A list of Telegram chat ids (non-zero whole numbers), at most ``cap`` of them."""

    cap: int = 20


@dataclass(frozen=True)
class Url:
    """An ``http://`` or ``https://`` URL, kept as a :class:`~khronos_cli.redaction.Secret`
    (a webhook's URL often carries its token); ``""`` means none."""


Kind = Duration | Count | Rates | Percent | Choice | Text | ChatIds | Url


def setting(default: Any, kind: Kind) -> Any:
    """A dataclass field with ``default`` whose values are of ``kind``."""
    return dataclasses.field(default=default, metadata={"kind": kind})


def kind_of(cls: type[Any], name: str) -> Kind:
    """The kind of field ``name`` of the settings class ``cls``."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            kind = item.metadata.get("kind")
            if kind is None:
                raise TypeError(f"{cls.__name__}.{name} is declared without a kind (setting())")
            return kind  # type: ignore[no-any-return]
    raise KeyError(f"{cls.__name__} has no field {name!r}")
