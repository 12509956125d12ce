"""Grouping alerts: every event of one subject within a window becomes one line.

A *subject* is what an alert is about: a breaker (``breaker:anthropic-api``), a condition
(``degraded:redis``, ``backlog:outbox``) or a one-off kind (``crashloop``, ``backup``, ``unclean``,
``test``). The first event of a subject opens its window; what follows within ``group_window``
joins it; when the window ends the subject's events are rendered as **one** line. A breaker that
flapped seven times is "anthropic-api opened 7 times in 2 min, open now", not fourteen messages.

Breakers and conditions are told on their edges only (open/close, on/off): a condition that holds
for an hour is one alert when it starts and one when it ends, never a reminder a minute. How long
a breaker stayed open, or a condition held, is kept across windows, so the "closed again" line
says how long it was open and why it opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Grouper", "span_text"]


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``subject`` (``kind:name``), ``what`` (``open``/``close``,
    ``on``/``off``, or ``once``), ``detail`` (a reason, an error, a figure), wall-clock ``at``."""

    subject: str
    what: str
    detail: str
    at: float

    @property
    def kind(self) -> str:
        return self.subject.partition(":")[0]

    @property
    def name(self) -> str:
        return self.subject.partition(":")[2] or self.kind


@dataclass
class _Window:
    opened_at: float  # monotonic
    events: list[Event] = field(default_factory=list)


def span_text(seconds: float) -> str:
    """``4.2`` -> ``'4.2 s'``, ``75`` -> ``'75 s'``, ``250`` -> ``'4 min'``, ``7300`` ->
    ``'2.0 h'``."""
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Grouper:
    """Collects events per subject and renders each subject's window as one line."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self.clock = clock
        self._open: dict[str, _Window] = {}
        self._since: dict[str, tuple[float, str]] = {}  # subject -> (started at, why): open/on
        self._up: set[str] = set()  # subjects open/on now, as events arrive

    def add(self, event: Event) -> None:
        """Group ``event``; an open/on of a subject already open/on is dropped (a breaker that
        re-opens after a failed half-open trial has not opened again for the operator)."""
        if event.what in ("open", "on"):
            if event.subject in self._up:
                return
            self._up.add(event.subject)
        elif event.what in ("close", "off"):
            self._up.discard(event.subject)
        window = self._open.setdefault(event.subject, _Window(self.clock()))
        window.events.append(event)

    def amend(self, subject: str, detail: str) -> None:
        """Replace the detail of ``subject``'s last event in its window (a breaker forced open:
        the operator's reason instead of "forced open")."""
        window = self._open.get(subject)
        if window and window.events:
            last = window.events[-1]
            window.events[-1] = Event(last.subject, last.what, detail, last.at)

    @property
    def waiting(self) -> int:
        return len(self._open)

    def due(self, *, everything: bool = False) -> list[tuple[str, list[Event]]]:
        """The subjects whose window ended (every subject with ``everything``), rendered."""
        now = self.clock()
        ready = [
            subject
            for subject, window in self._open.items()
            if everything or now - window.opened_at >= self.window
        ]
        return [(self.render(self._open[s].events), self._open.pop(s).events) for s in ready]

    # -- rendering ------------------------------------------------------------------------------

    def render(self, events: list[Event]) -> str:
        first = events[0]
        if first.what == "once":
            return _once(events)
        starts = [e for e in events if e.what in ("open", "on")]
        ends = [e for e in events if e.what in ("close", "off")]
        before = self._since.get(first.subject)
        for event in events:  # what is open/on after this window, and since when
            if event.what in ("open", "on"):
                self._since[event.subject] = (event.at, event.detail)
            else:
                self._since.pop(event.subject, None)
        label, up, down = _words(first)
        last = events[-1]
        if len(starts) == 1 and not ends:
            return f"{label} {up}: {first.detail}"
        if not starts and len(ends) == 1:
            if before is None:
                return f"{label} {down}"
            took, why = span_text(ends[0].at - before[0]), before[1]
            if first.kind == "telegram":
                return f"Telegram was down for {took} ({why}); the alerts above waited for it"
            return f"{label} {down} after {took} (it began: {why})"
        if len(starts) == 1 and len(ends) == 1 and starts[0].at <= ends[0].at:
            took = span_text(ends[0].at - starts[0].at)
            if first.kind == "telegram":
                return f"Telegram was down for {took} ({starts[0].detail})"
            return f"{label} {up} ({starts[0].detail}) and {down} after {took}"
        span = span_text(max(last.at - first.at, 1.0))
        on, off = _NOW.get(first.kind, ("still on", "over now"))
        now = on if last.what in ("open", "on") else off
        reason = starts[-1].detail if starts else first.detail
        times = max(len(starts), 1)
        return f"{label} {up} {times} times in {span}, {now} (last: {reason})"


_WORDS: dict[str, tuple[str, str, str]] = {  # kind -> label, started, ended
    "breaker": ("breaker {name}", "opened", "closed again"),
    "degraded": ("degraded", "({name})", "recovered"),
    "backlog": ("outbox backlog", "over the threshold", "cleared"),
    "oldest": ("outbox", "has an old pending message", "caught up"),
    "telegram": ("Telegram", "unreachable", "reachable again"),
}


_NOW = {"breaker": ("open now", "closed now"), "degraded": ("degraded now", "recovered now")}


def _words(event: Event) -> tuple[str, str, str]:
    label, up, down = _WORDS.get(event.kind, ("{name}", "started", "ended"))
    if event.kind == "degraded":  # "degraded (redis): ..." / "degraded (redis) recovered"
        return f"degraded ({event.name})", "now", "recovered"
    return label.format(name=event.name), up, down


_ONCE: dict[str, str] = {
    "crashloop": "the worker is crash-looping",
    "backup": "a backup failed",
    "unclean": "the last run did not stop cleanly",
    "restarted": "the worker is up again after a crash loop",
    "test": "test alert",
}


def _once(events: list[Event]) -> str:
    first, last = events[0], events[-1]
    what = _ONCE.get(first.kind, first.kind)
    if len(events) == 1:
        return f"{what}: {first.detail}"
    span = span_text(max(last.at - first.at, 1.0))
    return f"{what} ({len(events)} times in {span}); last: {last.detail}"


def describe(events: list[Event]) -> dict[str, Any]:
    """A window's events for the webhook's JSON."""
    first = events[0]
    return {
        "subject": first.subject,
        "kind": first.kind,
        "count": len(events),
        "first_at": round(first.at, 3),
        "last_at": round(events[-1].at, 3),
        "last": {"what": events[-1].what, "detail": events[-1].detail},
    }
