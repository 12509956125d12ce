"""Errors that repeat per connection, logged once with a count.

A client that hangs up mid-body, a thousand accepts failing for want of file descriptors, a
poison webhook update sent again and again: each is worth one line, not a line (let alone a
25-line traceback) per occurrence, which would rotate the log away in a minute. :class:`Repeats`
logs the first occurrence of each kind at once, counts the rest, and writes one summary line
(``... 7,841 more in the last 60s``) when the kind comes back after :data:`SUMMARY_EVERY` or when
the server closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SUMMARY_EVERY", "Repeats"]

SUMMARY_EVERY = 60.0


@dataclass
class _Kind:
    message: str
    since: float
    more: int = 0
    total: int = 1


class Repeats:
    """``note(kind, message)``: the first of a kind is logged, the rest counted and summarized."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every: float = SUMMARY_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._kinds: dict[str, _Kind] = {}

    def note(
        self, kind: str, message: str, *, level: int = logging.WARNING, exc_info: bool = False
    ) -> None:
        """Log ``message`` if ``kind`` is new (with the traceback when ``exc_info``), else count."""
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is None:
            self._kinds[kind] = _Kind(message, now)
            self.logger.log(
                level, "%s (repeats are counted, not logged)", message, exc_info=exc_info
            )
            return
        seen.more += 1
        seen.total += 1
        if now - seen.since >= self.every:
            self._summarize(seen, now, level)

    def count(self, kind: str) -> int:
        """How many times ``kind`` happened since the start."""
        seen = self._kinds.get(kind)
        return seen.total if seen else 0

    def flush(self) -> None:
        """Summarize what was counted and not yet written (at close)."""
        now = self.clock()
        for seen in self._kinds.values():
            if seen.more:
                self._summarize(seen, now, logging.WARNING)

    def _summarize(self, seen: _Kind, now: float, level: int) -> None:
        self.logger.log(
            level, "%s: %d more in the last %.0fs", seen.message, seen.more, now - seen.since
        )
        seen.more, seen.since = 0, now
