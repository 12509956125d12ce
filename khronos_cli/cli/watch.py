"""Live views: redraw in place about once per interval until Ctrl-C (exit 0).

When stdout is not a terminal, or with ``--json``, each interval prints one plain snapshot (or one
NDJSON line) instead of redrawing, so ``watch`` output can be piped and logged.

A watch outlives the worker it watches. When the worker stops answering (a stop, a crash, a
restart by the supervisor or by hand) the watch says so on stderr, keeps the last view (marked
as lost on a terminal) and asks again every second; when a worker answers again it says so and
goes on. With an ``identity`` (the worker's pid, for ``status``) it also notices a restart that
happened between two looks. Only the first read's failure ends it (nothing to watch: exit 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from khronos_cli.cli import output
from khronos_cli.cli.grid import terminal, to_rich
from khronos_cli.cli.options import MAX_INTERVAL, number
from khronos_cli.errors import KhronosError, NotRunningError

__all__ = ["watch"]

RETRY = 1.0  # seconds between tries while the worker does not answer


class _Feed:
    """The reads, and what changed between them: lost, back, restarted."""

    def __init__(self, fetch: Callable[[], Any], identity: Callable[[Any], Any] | None) -> None:
        self.fetch = fetch
        self.identity = identity
        self.data = fetch()  # the first read's error is the command's
        self.who = identity(self.data) if identity else None
        self.lost_at: float | None = None
        self.problem = ""

    def next(self) -> bool:
        """Read again; True when there is new data to show."""
        try:
            data = self.fetch()
        except KhronosError as exc:
            if isinstance(exc, NotRunningError):
                self.problem = f"nothing answers on {exc.socket_path}"
            else:
                self.problem = str(exc)
            if self.lost_at is None:
                self.lost_at = time.monotonic()
                output.stderr.print(
                    f"lost the worker: {self.problem}; waiting for one to answer (Ctrl-C to quit)",
                    markup=False,
                )
            return False
        if self.lost_at is not None:
            gap = time.monotonic() - self.lost_at
            output.stderr.print(f"a worker answers again after {gap:.1f}s", markup=False)
            self.lost_at = None
        if self.identity is not None:
            who = self.identity(data)
            if who != self.who:
                output.stderr.print(_change(self.who, who), markup=False)
                self.who = who
        self.data = data
        return True

    @property
    def pause(self) -> float:
        return RETRY if self.lost_at is not None else 0.0


def _change(before: Any, after: Any) -> str:
    if after is None:
        return f"the worker (pid {before}) is gone; waiting for one to answer (Ctrl-C to quit)"
    if before is None:
        return f"a worker runs again (pid {after})"
    return f"the worker restarted: pid {before} -> {after}"


def watch(
    fetch: Callable[[], Any],
    render: Callable[[Any], Any],
    *,
    interval: float,
    as_json: bool,
    identity: Callable[[Any], Any] | None = None,
) -> None:
    """Poll ``fetch`` every ``interval`` seconds and show it until interrupted."""
    interval = number(interval, "--interval", least=0.1, most=MAX_INTERVAL)
    try:
        feed = _Feed(fetch, identity)
        if not as_json and terminal():
            _live(feed, render, interval)
        else:
            _lines(feed, render, interval, as_json=as_json)
    except KeyboardInterrupt:
        return


def _live(feed: _Feed, render: Callable[[Any], Any], interval: float) -> None:
    def view() -> RenderableType:
        if feed.lost_at is None:
            return to_rich(render(feed.data))
        lost = time.monotonic() - feed.lost_at
        note = Text(f"lost {lost:.0f}s ago: {feed.problem}; waiting for a worker", "bold yellow")
        return Group(to_rich(render(feed.data)), note)

    with Live(view(), console=output.stdout, auto_refresh=False) as live:
        while True:
            time.sleep(feed.pause or interval)
            feed.next()
            live.update(view(), refresh=True)


def _lines(feed: _Feed, render: Callable[[Any], Any], interval: float, *, as_json: bool) -> None:
    fresh, first = True, True
    while True:
        if fresh and as_json:
            output.print_json(feed.data)
        elif fresh:
            if not first:
                output.show("")
            output.show(render(feed.data))
        first = False
        time.sleep(feed.pause or interval)
        fresh = feed.next()
