"""What a door accepts: JSON of bounded depth, values JSON can carry, fields of the right type and
range. Standard library only; no I/O.

Every body that reaches the public port, the webhook and the control socket goes through
:func:`loads` and :func:`inspect` before any handler looks at it, so nothing malformed gets as far
as a breaker, a limiter, SQLite or Redis (DESIGN.md amendment: "a bad request is a 4xx naming the
field and never a breaker failure"):

- **depth**: at most :data:`MAX_DEPTH` levels of arrays and objects. The parser's own recursion
  limit (``RecursionError`` on 100,000 levels) is caught at this one boundary;
- **numbers**: finite (``NaN``, ``Infinity`` and overflowing literals like ``1e400`` are refused),
  integers within int64 (what Telegram's ids, SQLite and Redis hold; a literal of more than 40
  digits is not even converted);
- **text**: encodable as UTF-8 (a lone surrogate such as ``"\\ud800"`` is valid JSON but not
  Unicode text), keys included.

The field readers (:func:`integer`, :func:`text`, :func:`seconds`, ...) then check one field's type
and range. Every refusal is a :class:`FieldError` (a ``ValueError``, so a 400) naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

from khronos_cli.control.protocol import MAX_DURATION

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DEPTH",
    "FieldError",
    "boolean",
    "choice",
    "inspect",
    "integer",
    "loads",
    "number",
    "only",
    "seconds",
    "text",
]

MAX_DEPTH = 32  # a Telegram update nests about 8 deep (a reply's message's entities)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MAX_DIGITS = 40
_TOO_BIG = 2**64  # stands for an integer literal too long to convert; inspect() names its field


class FieldError(ValueError):
    """A request (or one of its fields) khronos cannot use; ``field`` names it when one is to
    blame (``chat_id``, ``message.chat.id``, ``entities[2].offset``)."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        super().__init__(message)


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _int(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _TOO_BIG


def loads(raw: bytes) -> Any:
    """The JSON value in ``raw`` (UTF-8); FieldError when it is not one, nests too deep, or
    holds a value JSON cannot carry (see :func:`inspect`)."""
    try:
        document = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FieldError(None, "the request body is not UTF-8 text") from None
    try:
        value = json.loads(document, parse_int=_int)
    except RecursionError:
        raise FieldError(None, f"the request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise FieldError(None, "the request body is not valid JSON") from None
    inspect(value)
    return value


def _encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def inspect(value: Any) -> None:
    """FieldError naming the first field nested too deep, holding a non-finite number, an integer
    outside int64 or text that is not valid Unicode. Iterative: no recursion to blow up."""
    pending: list[tuple[str, Any, int]] = [("", value, 0)]
    while pending:
        path, item, depth = pending.pop()
        field = path or None
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise FieldError(None, f"the request body nests deeper than {MAX_DEPTH} levels")
            if isinstance(item, list):
                pending.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(item))
                continue
            for key, inner in item.items():
                if not _encodable(key):
                    raise FieldError(field, f"a key in {path or 'the body'} is not valid Unicode")
                pending.append((f"{path}.{key}" if path else key, inner, depth + 1))
        elif isinstance(item, str):
            if not _encodable(item):
                raise FieldError(field, f"{field!r} is not valid Unicode text (a lone surrogate)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise FieldError(field, f"{field!r} must be a finite number, not {item!r}")
        elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise FieldError(field, f"{field!r} is outside the 64-bit integer range")


def _get(body: dict[str, Any], key: str, default: Any, required: bool) -> Any:
    if key in body:
        return body[key]
    if required:
        raise FieldError(key, f"{key!r} is missing")
    return default


def integer(
    body: dict[str, Any],
    key: str,
    *,
    lo: int = INT64_MIN,
    hi: int = INT64_MAX,
    required: bool = True,
    default: int | None = None,
) -> int | None:
    """An integer (not a boolean, not a float) in ``lo..hi``."""
    value = _get(body, key, default, required)
    if value is None and not required:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FieldError(key, f"{key!r} must be an integer from {lo} to {hi}; got {_show(value)}")
    return value


def text(
    body: dict[str, Any], key: str, *, most: int, required: bool = True, default: str | None = None
) -> str | None:
    """Non-blank Unicode text of at most ``most`` code points."""
    value = _get(body, key, default, required)
    if value is None and not required:
        return default
    if not isinstance(value, str) or not value.strip():
        raise FieldError(key, f"{key!r} must be a non-empty string; got {_show(value)}")
    if not _encodable(value):
        raise FieldError(key, f"{key!r} is not valid Unicode text (a lone surrogate)")
    if len(value) > most:
        raise FieldError(key, f"{key!r} is longer than {most} characters ({len(value)})")
    return value


def number(
    body: dict[str, Any], key: str, *, lo: float, hi: float, default: float | None = None
) -> float | None:
    """A finite number in ``lo..hi`` (``default`` when absent or null)."""
    value = body.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        raise FieldError(key, f"{key!r} must be a number from {lo:g} to {hi:g}; got {_show(value)}")
    return float(value)


def seconds(
    body: dict[str, Any], key: str, *, most: float = MAX_DURATION, default: float | None = None
) -> float | None:
    """A finite duration above zero and at most ``most`` seconds (``default`` when absent)."""
    value = body.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= most
    ):
        raise FieldError(
            key, f"{key!r} must be seconds above 0 and at most {most:g}; got {_show(value)}"
        )
    return float(value)


def boolean(body: dict[str, Any], key: str, *, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise FieldError(key, f"{key!r} must be true or false; got {_show(value)}")
    return value


def choice(body: dict[str, Any], key: str, choices: Collection[str], *, default: str) -> str:
    value = body.get(key, default)
    if value not in choices:
        raise FieldError(key, f"{key!r} must be one of {', '.join(choices)}; got {_show(value)}")
    return str(value)


def only(body: dict[str, Any], allowed: Collection[str]) -> None:
    """FieldError naming the first key that is not one of ``allowed``."""
    for key in body:
        if key not in allowed:
            raise FieldError(key, f"unknown field {key!r}; expected {', '.join(sorted(allowed))}")
