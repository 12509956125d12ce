"""Parsing and bounding what each key of ``khronos.toml`` holds, by its kind (duration, count,
rate, choice) and range. A value outside its range is refused at start, because it cannot
work: ``buckets = 100000000`` allocates for 18 s and dies of MemoryError, ``restart_delay =
1e308`` kills the supervisor, a timeout of a century never times out.

Each field's kind and range is declared on the field (``settings.py``, :mod:`khronos_cli.kinds`):
every duration is finite and at most one hour unless its kind says otherwise; every count has a
cap; a rate allows at most :data:`MAX_RATE_LIMIT` events in a period of at most
:data:`MAX_RATE_PERIOD`. The caps are
far above any setting that makes sense and far below the ones that break something.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import math
import re

from khronos_cli.errors import ConfigError
from khronos_cli.kinds import (
    DAY,
    HOUR,
    MINUTE,
    ChatIds,
    Choice,
    Count,
    Duration,
    Kind,
    Percent,
    Rates,
    Url,
)
from khronos_cli.redaction import Secret
from khronos_cli.settings import Rate

__all__ = [
    "MAX_RATE_LIMIT",
    "MAX_RATE_PERIOD",
    "MAX_SECONDS",
    "check",
    "parse_duration",
    "parse_rate",
    "seconds_text",
]

MAX_SECONDS = HOUR
MAX_RATE_LIMIT = 1_000_000
MAX_RATE_PERIOD = DAY

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": MINUTE, "min": MINUTE, "h": HOUR}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": MINUTE,
    "min": MINUTE,
    "minute": MINUTE,
    "h": HOUR,
    "hour": HOUR,
}
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_DURATION_HINT = "seconds or a duration like '500ms', '30s', '2m'"


def seconds_text(seconds: float) -> str:
    """``3600.0`` -> ``'1h'``, ``86400.0`` -> ``'1d'``: a cap as an operator writes it."""
    for unit, size in (("d", DAY), ("h", HOUR), ("min", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: object, *, source: str = "argument", key: str = "duration") -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"2m"`` or ``"1h"``."""
    if isinstance(value, bool):
        raise ConfigError(source, key, value, _DURATION_HINT)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too big for a float
            seconds = math.inf
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(source, key, value, _DURATION_HINT)
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(source, key, value, "a finite duration of zero or more seconds")
    return seconds


def parse_rate(value: object, *, source: str = "argument", key: str = "rate") -> Rate:
    """A :class:`Rate` from ``"30/s"``, ``"20/min"`` or ``"100/10s"``."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match[1]) < 1:
        raise ConfigError(source, key, value, "a rate like '30/s', '20/min' or '100/10s'")
    period = float(match[2] or 1) * _RATE_UNITS[match[3]]
    if period <= 0:
        raise ConfigError(source, key, value, "a rate with a period above zero")
    return Rate(int(match[1]), period)


def check(source: str, full: str, kind: Kind, value: object) -> object:
    """``value`` of the key spelled ``full`` in the file, of ``kind``, as khronos uses it, or
    ConfigError naming the source, the key and the value."""
    if isinstance(kind, Duration):
        if kind.optional and value == "none":
            return None
        seconds = parse_duration(value, source=source, key=full)
        low = "above zero" if kind.positive else "of zero or more"
        if (seconds == 0 and kind.positive) or seconds > kind.cap:
            raise ConfigError(
                source, full, value, f"a duration {low} and at most {seconds_text(kind.cap)}"
            )
        return seconds
    if isinstance(kind, Rates):
        if not isinstance(value, list):
            raise ConfigError(source, full, value, "a list of rates like ['1/s', '20/min']")
        return tuple(_rate(source, full, item) for item in value)
    if isinstance(kind, Count):
        if kind.optional and value == "none":
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= kind.cap:
            none = " or 'none'" if kind.optional else ""
            raise ConfigError(source, full, value, f"a whole number from 1 to {kind.cap:,}{none}")
        return value
    if isinstance(kind, Percent):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
            raise ConfigError(source, full, value, "a percentage above 0 and at most 100")
        return float(value)
    if isinstance(kind, Choice):
        return choice(source, full, kind, value)
    if isinstance(kind, ChatIds):
        return chat_ids(source, full, kind, value)
    if isinstance(kind, Url):
        if not isinstance(value, str) or (value and not _URL.match(value)):
            raise ConfigError(source, full, value, "an http:// or https:// URL", hidden=True)
        return Secret(value)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(source, full, value, "a non-empty string")
    return value


def choice(source: str, full: str, kind: Choice, value: object) -> object:
    """One of the words of ``kind`` (``"none"``, when it takes it, is None)."""
    if kind.none and value == "none":
        return None
    if value not in kind.words:
        words = (*kind.words, "none") if kind.none else kind.words
        raise ConfigError(source, full, value, "one of " + ", ".join(repr(w) for w in words))
    return value


def chat_ids(source: str, full: str, kind: ChatIds, value: object) -> tuple[int, ...]:
    """Telegram chat ids: a list of non-zero whole numbers (a group's are negative)."""
    ok = isinstance(value, list) and len(value) <= kind.cap
    if ok:
        assert isinstance(value, list)
        ok = all(
            isinstance(item, int) and not isinstance(item, bool) and item != 0 and abs(item) < 2**53
            for item in value
        )
    if not ok:
        expected = f"a list of at most {kind.cap} Telegram chat ids like [123456789, -1001234]"
        raise ConfigError(source, full, value, expected)
    assert isinstance(value, list)
    return tuple(dict.fromkeys(value))


def _rate(source: str, full: str, value: object) -> Rate:
    rate = parse_rate(value, source=source, key=full)
    if rate.limit > MAX_RATE_LIMIT or rate.period > MAX_RATE_PERIOD:
        expected = f"at most {MAX_RATE_LIMIT:,} per period, in a period of at most a day"
        raise ConfigError(source, full, value, expected)
    return rate
