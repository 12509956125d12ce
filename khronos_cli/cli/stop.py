"""``khronos stop``: ask for the graceful stop and draw its seven steps live.

A spinner marks the running step, a tick / cross / clock how each ended, with its duration, and
the overall deadline counts down. ``--json`` streams the worker's events as NDJSON instead. Exit 0
when the worker stopped clean, 1 when it was forced or ran past the deadline, 3 when nothing runs.
Ctrl-C detaches: the stop goes on in the worker, and ``khronos stop`` again follows it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from khronos_cli.cli import options, output
from khronos_cli.cli.options import JSONOption, StateDirOption, client
from khronos_cli.control.protocol import MAX_DURATION, STEP_NAMES, STEP_TITLES

_ICONS = {"done": ("✔", "green"), "skipped": ("↷", "yellow"), "cut": ("✂", "yellow"),
          "timeout": ("⏱", "red"), "deadline": ("⏱", "red"), "failed": ("✘", "red")}  # fmt: skip


class Progress:
    """The state of the stop as the events tell it, and its rendering."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.began = time.monotonic()
        self.rows: dict[str, dict[str, Any]] = {name: {} for name in STEP_NAMES}
        self.report: dict[str, Any] | None = None
        self.forced = False

    def apply(self, event: dict[str, Any]) -> None:
        kind, name = event.get("event"), str(event.get("name", ""))
        if kind == "step_started":
            self.rows.setdefault(name, {})["running"] = time.monotonic()
        elif kind == "step_finished":
            self.rows.setdefault(name, {}).update(event, running=None)
        elif kind == "forced":
            self.forced = True
        elif kind == "done":
            self.report = event

    def __rich__(self) -> RenderableType:
        table = Table(show_header=False, box=None, padding=(0, 1))
        for number, (name, row) in enumerate(self.rows.items(), start=1):
            title = f"{number}. {STEP_TITLES.get(name, name)}"
            if row.get("running"):
                icon: RenderableType = Spinner("dots", style="cyan")
                took = f"{time.monotonic() - row['running']:.1f}s"
            elif "outcome" in row:
                glyph, style = _ICONS.get(str(row["outcome"]), ("?", ""))
                icon = Text(glyph, style)
                took = f"{row['outcome']} {float(row.get('duration_s') or 0):.2f}s"
            else:
                icon, took = Text("·", "dim"), ""
            table.add_row(icon, Text(title), Text(took, "dim"))
        if self.report is None:
            left = max(0.0, self.deadline - (time.monotonic() - self.began))
            mode = "quick stop" if self.forced else "graceful stop"
            footer = Text(f"{mode}: deadline in {left:.1f}s", "yellow" if self.forced else "")
        else:
            footer = summary(self.report)
        return Group(table, footer)


def summary(report: dict[str, Any]) -> Text:
    kept = report.get("kept") or {}
    result = str(report.get("result"))
    text = Text(f"{result} stop in {float(report.get('duration_s') or 0):.2f}s",
                "bold green" if result == "clean" else "bold red")  # fmt: skip
    if report.get("hung_step"):
        text.append(f"; step {report['hung_step']!r} hung")
    if kept.get("jobs") or kept.get("messages"):
        text.append(f"; kept {kept.get('jobs', 0)} jobs and {kept.get('messages', 0)} messages "
                    "for the next start")  # fmt: skip
    return text


def _follow(events: Iterator[dict[str, Any]], progress: Progress, *, live: bool) -> None:
    if live:
        with Live(progress, console=output.stderr, refresh_per_second=12, transient=False):
            for event in events:
                progress.apply(event)
        return
    for event in events:
        progress.apply(event)
        if event.get("event") == "step_finished":
            output.stderr.print(f"step {event.get('step')} {event.get('name')}: "
                                f"{event.get('outcome')} ({event.get('duration_s')}s)",
                                markup=False)  # fmt: skip
        elif event.get("event") == "done":
            output.stderr.print(summary(event))


@output.command
def stop(
    state_dir: StateDirOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Overall deadline for the stop, seconds (1 to 900).")
    ] = 30.0,
    force: Annotated[
        bool, typer.Option("--force", help="Quick stop: skip the waits, keep unfinished work.")
    ] = False,
    as_json: JSONOption = False,
) -> None:
    """Stop the bot gracefully, showing the seven steps live."""
    timeout = options.number(timeout, "--timeout", least=1.0, most=MAX_DURATION)
    progress = Progress(timeout)
    with client(state_dir) as control:
        events = control.stream("POST", "/stop", {"force": force, "deadline": timeout})
        try:
            if as_json:
                for event in events:
                    progress.apply(event)
                    output.print_json(event)
            else:
                _follow(events, progress, live=output.stderr.is_terminal)
        except KeyboardInterrupt:
            output.stderr.print(
                "detached: the stop goes on; run `khronos stop` again to follow it, "
                "or `khronos status`"
            )
            raise typer.Exit(1) from None
    report = progress.report
    if report is None:
        output.fail("the worker went away before its final report; see `khronos status`")
    raise typer.Exit(int(report.get("exit_code", 1)))
