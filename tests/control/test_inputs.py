"""What a door accepts: bounded JSON, finite int64-safe values, Unicode text, typed fields."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from khronos_cli.control import inputs
from khronos_cli.control.inputs import MAX_DEPTH, FieldError
from khronos_cli.control.repeats import Repeats


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"[" * 100_000 + b"]" * 100_000, None),
        (b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", None),
        (b'{"for": NaN}', "for"),
        (b'{"x": {"y": [1, -Infinity]}}', "x.y[1]"),
        (b'{"chat_id": 9223372036854775808}', "chat_id"),
        (b'{"n": ' + b"7" * 5000 + b"}", "n"),
        (b'{"text": "ok \\ud800"}', "text"),
        (b'{"\\udfff": 1}', None),
        (b"\xff", None),
        (b"{nope", None),
    ],
)
def test_loads_refuses_what_no_request_may_hold_naming_the_field(
    raw: bytes, field: str | None
) -> None:
    """Deep nesting (even 100,000 levels: no RecursionError escapes), non-finite numbers, int64
    overflow, over-long literals, lone surrogates, non-UTF-8 and broken JSON: FieldError, with
    the path of the field to blame when there is one."""
    with pytest.raises(FieldError) as caught:
        inputs.loads(raw)
    assert caught.value.field == field


def test_loads_takes_the_limits_themselves() -> None:
    """int64's ends, 1e308, MAX_DEPTH levels and any valid Unicode pass untouched."""
    nested = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)  # inside the top-level object
    raw = b'{"a": -9223372036854775808, "b": 9223372036854775807, "c": 1e308, '
    raw += b'"d": "\\u00e9\\ud83d\\ude00", "e": ' + nested + b"}"
    value = inputs.loads(raw)
    assert value["a"] == -(2**63) and value["b"] == 2**63 - 1 and value["d"] == "é😀"


Reader = Callable[[dict[str, Any]], object]


@pytest.mark.parametrize(
    ("reader", "body", "field"),
    [
        (lambda b: inputs.seconds(b, "for"), {"for": 1e308}, "for"),
        (lambda b: inputs.seconds(b, "for"), {"for": 0}, "for"),
        (lambda b: inputs.seconds(b, "for"), {"for": True}, "for"),
        (lambda b: inputs.integer(b, "chat_id"), {"chat_id": 1.0}, "chat_id"),
        (lambda b: inputs.integer(b, "chat_id"), {}, "chat_id"),
        (lambda b: inputs.text(b, "text", most=3), {"text": "four"}, "text"),
        (lambda b: inputs.text(b, "text", most=3), {"text": "  "}, "text"),
        (lambda b: inputs.number(b, "p", lo=0, hi=1), {"p": float("nan")}, "p"),
        (lambda b: inputs.only(b, ("for",)), {"for": 1, "fro": 2}, "fro"),
    ],
)
def test_field_readers_refuse_out_of_range_values_naming_the_field(
    reader: Reader, body: dict[str, Any], field: str
) -> None:
    """Each reader refuses a wrong type, a missing field or a value out of its range, and names
    the field."""
    with pytest.raises(FieldError) as caught:
        reader(body)
    assert caught.value.field == field


def test_repeats_log_the_first_and_count_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    """A repeated kind is logged once; the rest are counted into one summary line per window."""
    now = [0.0]
    repeats = Repeats(logging.getLogger("test.repeats"), every=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.repeats"):
        for _ in range(1000):
            repeats.note("hang-up", "a client hung up")
        now[0] = 61.0
        repeats.note("hang-up", "a client hung up")
        repeats.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "a client hung up (repeats are counted, not logged)",
        "a client hung up: 1000 more in the last 61s",
    ]
    assert repeats.count("hang-up") == 1001
