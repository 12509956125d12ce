"""``khronos stop``: ask for the graceful stop and draw its seven steps live.

A spinner marks the running step with what it waits for (jobs running, messages queued), a
symbol how each ended (the outcomes of ``runtime/shutdown.py``: done, kept, cut, skipped, timeout,
failed) with its duration, and the overall deadline counts down. ``--json`` streams the worker's
events as NDJSON instead. The deadline is the configured ``[shutdown] deadline`` unless
``--timeout`` says otherwise.

Exit 0 when the stop was ``clean`` (kept work is named: "kept 30 messages"), 1 when it was
``forced`` (a quick stop, or a step that hung or failed), 3 when nothing runs. Ctrl-C detaches:
the stop goes on in the worker, and ``khronos stop`` again follows it.

A supervisor with no worker answering on the control socket (``starting``, ``backoff``,
``crashloop``) is stopped by signal (see ``control/instance.py``): exit 0 once it is gone.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from khronos_cli.cli import options, output
from khronos_cli.cli.options import JSONOption, StateDirOption, resolve_state_dir
from khronos_cli.control import instance
from khronos_cli.control.client import ControlClient
from khronos_cli.control.protocol import MAX_DURATION, STEP_NAMES, STEP_TITLES, socket_path
from khronos_cli.errors import NotRunningError

_ICONS = {
    "done": ("✔", "green"),
    "kept": ("⤓", "cyan"),
    "skipped": ("↷", "dim"),
    "cut": ("✂", "yellow"),
    "timeout": ("⏱", "red"),
    "failed": ("✘", "red"),
}
_GRACE = 15.0  # beyond the deadline, for the supervisor's own kill of a worker that hangs


def waiting(counts: object) -> str:
    """``{"jobs": 2}`` -> ``'2 jobs running'``; ``{"messages": 30}`` -> ``'30 messages queued'``
    ('' when there is nothing to wait for)."""
    if not isinstance(counts, dict):
        return ""
    words = []
    if isinstance(counts.get("jobs"), int) and counts["jobs"]:
        jobs = counts["jobs"]
        words.append(f"{jobs} job{'s' * (jobs != 1)} running")
    if isinstance(counts.get("messages"), int) and counts["messages"]:
        messages = counts["messages"]
        words.append(f"{messages} message{'s' * (messages != 1)} queued")
    return ", ".join(words)


def kept_text(kept: object) -> str:
    """``{"jobs": 0, "messages": 30}`` -> ``'kept 30 messages'`` ('' when nothing was kept)."""
    if not isinstance(kept, dict):
        return ""
    held = []
    for key, noun in (("jobs", "job"), ("messages", "message")):
        count = kept.get(key)
        if isinstance(count, int) and count:
            held.append(f"{count} {noun}{'s' * (count != 1)}")
    return "kept " + " and ".join(held) if held else ""


class Progress:
    """The state of the stop as the events tell it, and its rendering."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.began = time.monotonic()
        self.rows: dict[str, dict[str, Any]] = {name: {} for name in STEP_NAMES}
        self.report: dict[str, Any] | None = None
        self.forced = False

    def apply(self, event: dict[str, Any]) -> None:
        kind, name = event.get("event"), str(event.get("name", ""))
        if kind == "step_started":
            self.rows.setdefault(name, {}).update(
                running=time.monotonic(), waiting=event.get("waiting")
            )
            if self.deadline is None and isinstance(event.get("deadline_s"), int | float):
                self.deadline = float(event["deadline_s"])
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
                if counts := waiting(row.get("waiting")):
                    took += f", waiting for {counts}"
            elif "outcome" in row:
                glyph, style = _ICONS.get(str(row["outcome"]), ("?", ""))
                icon = Text(glyph, style)
                took = f"{row['outcome']} {float(row.get('duration_s') or 0):.2f}s"
                if held := kept_text(_kept_of(row.get("detail"))):
                    took += f": {held.removeprefix('kept ')}"
            else:
                icon, took = Text("·", "dim"), ""
            table.add_row(icon, Text(title), Text(took, "dim"))
        if self.report is None:
            mode = "quick stop" if self.forced else "graceful stop"
            if self.deadline is None:
                footer = Text(f"{mode}: {time.monotonic() - self.began:.1f}s")
            else:
                left = max(0.0, self.deadline - (time.monotonic() - self.began))
                footer = Text(f"{mode}: deadline in {left:.1f}s", "yellow" if self.forced else "")
        else:
            footer = summary(self.report)
        return Group(table, footer)


def _kept_of(detail: object) -> dict[str, Any]:
    if not isinstance(detail, dict):
        return {}
    return {"jobs": detail.get("kept_jobs"), "messages": detail.get("kept_messages")}


def summary(report: dict[str, Any]) -> Text:
    """``clean stop in 5.02s; kept 30 messages for the next start``."""
    result = str(report.get("result"))
    text = Text(
        f"{result} stop in {float(report.get('duration_s') or 0):.2f}s",
        "bold green" if result == "clean" else "bold red",
    )
    if report.get("reason"):
        text.append(f"; {report['reason']}")
    if held := kept_text(report.get("kept")):
        text.append(f"; {held} for the next start")
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
            row = progress.rows.get(str(event.get("name")), {})
            notes = [f"{event.get('duration_s')}s"]
            if counts := waiting(row.get("waiting")):
                notes.append(f"waited for {counts}")
            if held := kept_text(_kept_of(event.get("detail"))):
                notes.append(held)
            line = f"step {event.get('step')} {event.get('name')}: {event.get('outcome')}"
            output.stderr.print(f"{line} ({'; '.join(notes)})", markup=False)
        elif event.get("event") == "done":
            output.stderr.print(summary(event))


def _stop_supervisor(directory: Path, timeout: float | None, *, as_json: bool) -> int:
    """No worker answers: stop the supervisor by signal, if one holds the directory."""
    pid = instance.supervisor_pid(directory)
    if pid is None:
        raise NotRunningError(str(socket_path(directory)))
    state = str((instance.read_supervisor(directory) or {}).get("state") or "unknown")
    instance.signal_supervisor(pid, signal.SIGTERM)
    gone = instance.wait_gone(pid, (timeout or 30.0) + _GRACE)
    reason = f"no worker answered: the supervisor (pid {pid}, {state}) was stopped by SIGTERM"
    report = {
        "event": "done",
        "result": "clean" if gone else "forced",
        "exit_code": 0 if gone else 1,
        "reason": reason if gone else f"the supervisor (pid {pid}, {state}) is still running",
        "supervisor_pid": pid,
        "supervisor_state": state,
    }
    if as_json:
        output.print_json(report)
    elif gone:
        output.stderr.print(f"stopped: {reason}; nothing runs now", markup=False)
    else:
        output.stderr.print(
            f"the supervisor (pid {pid}) did not exit; `kill -9 {pid}` ends it", markup=False
        )
    return int(report["exit_code"])


@output.command
def stop(
    state_dir: StateDirOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Overall deadline for the stop, seconds (1 to 900); default: the config's "
            "shutdown.deadline (30 s unless set).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Quick stop: skip the waits, keep unfinished work.")
    ] = False,
    as_json: JSONOption = False,
) -> None:
    """Stop the bot gracefully, showing the seven steps live (whatever state it is in)."""
    if timeout is not None:
        timeout = options.number(timeout, "--timeout", least=1.0, most=MAX_DURATION)
    directory = resolve_state_dir(state_dir)
    progress = Progress(timeout)
    supervisor = instance.supervisor_pid(directory)
    restarting = (instance.read_supervisor(directory) or {}).get("state") == "restarting"
    if supervisor is not None and restarting:  # a restart under way: no new worker after this
        instance.signal_supervisor(supervisor, signal.SIGTERM)
    with ControlClient(directory) as control:
        events = control.stream("POST", "/stop", {"force": force, "deadline": timeout})
        try:
            if as_json:
                for event in events:
                    progress.apply(event)
                    output.print_json(event)
            else:
                _follow(events, progress, live=output.stderr.is_terminal)
        except NotRunningError:
            raise typer.Exit(_stop_supervisor(directory, timeout, as_json=as_json)) from None
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
