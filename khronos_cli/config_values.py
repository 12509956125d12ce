"""What each key of ``khronos.toml`` may hold: its kind (duration, count, rate, choice) and its
range. A value outside its range is refused at start, because it cannot work: ``buckets =
100000000`` allocates for 18 s and dies of MemoryError, ``restart_delay = 1e308`` kills the
supervisor, a timeout of a century never times out.

Every duration is finite and at most :data:`MAX_SECONDS` (one hour) unless its key says
otherwise (:data:`_MAX_SECONDS`); every count has a cap (:data:`_MAX_COUNT`); a rate allows at
most :data:`MAX_RATE_LIMIT` events in a period of at most :data:`MAX_RATE_PERIOD`. The caps are
far above any setting that makes sense and far below the ones that break something.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import math
import re

from khronos_cli.errors import ConfigError
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

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
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
_DURATION_HINT = "seconds or a duration like '500ms', '30s', '2m'"

_SHUTDOWN = {"deadline", "jobs_timeout", "outbox_timeout", "quick_budget"}
_SUPERVISOR = {"restart_delay", "max_restart_delay", "healthy_after", "kill_after"}
_RETENTION = {"journal", "outbox", "history", "interval"}
_POSITIVE_DURATIONS = {
    "timeout",
    "reset_timeout",
    "rolling_window",
    "health_check_interval",
    "idle_timeout",
    "poll_timeout",
    *_SHUTDOWN,
    *_SUPERVISOR,
    *_RETENTION,
}
_DURATIONS = {"min_time", "global_min_time", *_POSITIVE_DURATIONS}
_OPTIONAL_DURATIONS = {"half_open_max_wait"}
_MAX_SECONDS = {  # keys whose cap is not MAX_SECONDS
    "idle_timeout": DAY,
    "quick_budget": MINUTE,
    "max_restart_delay": DAY,
    "healthy_after": DAY,
    "journal": 3650 * DAY,
    "outbox": 3650 * DAY,
    "history": 3650 * DAY,
    "interval": DAY,
}
_RATES = {"rates", "group_rates", "global_rates"}
_MAX_COUNT = {
    "volume_threshold": 1_000_000,
    "buckets": 1_000,
    "half_open_max_calls": 1_000,
    "fail_max": 1_000_000,
    "crashloop_after": 1_000,
    "history_turns": 100_000,
    "max_tokens": 200_000,
    "max_bytes": 1024**3,
    "backups": 100,
}
_MAX_OPTIONAL_COUNT = {
    "max_concurrent": 100_000,
    "max_queued": 1_000_000,
    "global_max_concurrent": 100_000,
}
_CHOICES: dict[str, tuple[object, ...]] = {
    "policy": ("error_rate", "consecutive"),
    "strategy": ("reject", "drop-oldest", "drop-lowest"),
    "group_by": ("chat", "user", "none"),
    "mode": ("polling", "webhook"),
    "groups": ("addressed", "all", "off"),
    "format": ("text", "json"),
    "level": ("debug", "info", "warning", "error"),
}


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


def check(source: str, full: str, key: str, value: object) -> object:
    """``value`` of ``key`` (spelled ``full`` in the file) as khronos uses it, or ConfigError."""
    if key in _DURATIONS or key in _OPTIONAL_DURATIONS:
        if key in _OPTIONAL_DURATIONS and value == "none":
            return None
        seconds = parse_duration(value, source=source, key=full)
        cap = _MAX_SECONDS.get(key, MAX_SECONDS)
        low = "above zero" if key in _POSITIVE_DURATIONS else "of zero or more"
        if (seconds == 0 and key in _POSITIVE_DURATIONS) or seconds > cap:
            raise ConfigError(
                source, full, value, f"a duration {low} and at most {seconds_text(cap)}"
            )
        return seconds
    if key in _RATES:
        if not isinstance(value, list):
            raise ConfigError(source, full, value, "a list of rates like ['1/s', '20/min']")
        return tuple(_rate(source, full, item) for item in value)
    if key in _MAX_COUNT or key in _MAX_OPTIONAL_COUNT:
        optional = key in _MAX_OPTIONAL_COUNT
        if optional and value == "none":
            return None
        cap = _MAX_OPTIONAL_COUNT[key] if optional else _MAX_COUNT[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cap:
            expected = f"a whole number from 1 to {cap:,}" + (" or 'none'" if optional else "")
            raise ConfigError(source, full, value, expected)
        return value
    if key == "error_threshold":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
            raise ConfigError(source, full, value, "a percentage above 0 and at most 100")
        return float(value)
    return choice(source, full, key, value)


def choice(source: str, full: str, key: str, value: object) -> object:
    """One of the words ``key`` takes (``group_by = "none"`` is None)."""
    choices = _CHOICES[key]
    if key == "group_by" and value == "none":
        return None
    if value not in choices:
        raise ConfigError(source, full, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def _rate(source: str, full: str, value: object) -> Rate:
    rate = parse_rate(value, source=source, key=full)
    if rate.limit > MAX_RATE_LIMIT or rate.period > MAX_RATE_PERIOD:
        expected = f"at most {MAX_RATE_LIMIT:,} per period, in a period of at most a day"
        raise ConfigError(source, full, value, expected)
    return rate
