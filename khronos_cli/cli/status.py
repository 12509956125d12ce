"""``khronos status``: the health summary of one instance, once or live.

State and why (``why`` rows when degraded, ``waiting`` while not ready yet), pids, uptime,
restarts, ports, backend, then what an operator checks next: breakers not closed, active
outages, the outbox backlog, jobs, Redis and the poller lease, how the last run ended; in a crash
loop, the last exit and output lines. An instance that ran and is stopped shows how it ended (and
the command exits 3, as for any command with nothing running).
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text

from khronos_cli.cli import output, reads
from khronos_cli.cli.options import (
    AllOption,
    IntervalOption,
    JSONOption,
    StateDirOption,
    WatchOption,
    resolve_state_dir,
)
from khronos_cli.control.state import STOPPED
from khronos_cli.errors import NotRunningError

_STYLE = {
    "ready": "green",
    "starting": "cyan",
    "degraded": "yellow",
    "stopping": "yellow",
    "restarting": "yellow",
    "backoff": "red",
    "crashloop": "bold red",
    "stopped": "dim",
}
_BREAKER_STYLE = {"open": "bold red", "half-open": "yellow"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _ago(at: object) -> str:
    if not isinstance(at, int | float):
        return ""
    seconds = max(0.0, time.time() - at)
    return f"{seconds:.0f}s ago" if seconds < 60 else f"{_duration(seconds)} ago"


def last_stop(report: dict[str, Any]) -> str:
    """How a run ended, on one line: ``clean in 0.12s, kept 30 messages, 3m05s ago (exit 0)``."""
    words = [str(report.get("result") or "unknown")]
    if isinstance(report.get("duration_s"), int | float):
        words[0] += f" in {float(report['duration_s']):.2f}s"
    kept = report.get("kept") or {}
    held = [f"{kept[k]} {k}" for k in ("jobs", "messages") if kept.get(k)]
    if held:
        words.append("kept " + " and ".join(held))
    if report.get("hung_step"):
        words.append(f"step {report['hung_step']} hung")
    if ago := _ago(report.get("started_at")):
        words.append(ago)
    text = ", ".join(words)
    code = report.get("exit_code")
    return text if code is None else f"{text} (exit {code})"


def _breakers(breakers: dict[str, Any]) -> Text:
    text = Text()
    closed = 0
    for name, brief in breakers.items():
        state = str(brief.get("state"))
        if state == "closed" and not brief.get("forced"):
            closed += 1
            continue
        if text:
            text.append(", ")
        text.append(f"{name} {state}", _BREAKER_STYLE.get(state, ""))
        details = []
        if brief.get("forced"):
            forced = brief["forced"]
            left = float(forced.get("expires_in") or 0)
            details.append(f"forced: {forced.get('reason')}, {left:.0f}s left")
        elif brief.get("reason"):
            details.append(str(brief["reason"]))
        if not brief.get("forced") and brief.get("next_trial_in") is not None:
            details.append(f"trial in {float(brief['next_trial_in']):.1f}s")
        if details:
            text.append(f" ({'; '.join(details)})")
    if closed:
        text.append(f"; {closed} closed" if text else f"all {closed} closed")
    return text


def _outages(outages: dict[str, Any]) -> str:
    if not outages:
        return "none"
    return ", ".join(
        f"{name} {o.get('mode')}, {float(o.get('remaining_s') or 0):.0f}s left"
        for name, o in outages.items()
    )


def render(data: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    state = str(data["state"])

    def row(key: str, value: str | Text) -> None:
        table.add_row(key, value if isinstance(value, Text) else Text(value))

    row("state", Text(state, _STYLE.get(state, "")))
    for reason in data.get("reasons") or []:  # why it is degraded: open breakers, Redis, polling
        row("why", Text(str(reason), "bold red"))
    if data.get("waiting_for"):
        row("waiting", Text(f"for {data['waiting_for']}", "cyan"))
    if state != STOPPED:
        worker = data.get("worker_pid")
        pid = str(data.get("pid") or "—")
        if data.get("supervised"):
            pid += f" (worker {worker})" if worker else " (no worker now)"
        row("pid", pid)
        row("uptime", _duration(data.get("uptime_s")))
        row("restarts", str(data.get("restarts") or 0))
        if data.get("http_port") is not None:
            probes = f" (probes on :{data['probe_port']})" if data.get("probe_port") else ""
            row("http", f"{data.get('http_host') or '127.0.0.1'}:{data['http_port']}{probes}")
    row("socket", str(data["socket"]))
    if state != STOPPED:
        row("backend", str(data.get("backend") or "—"))
        if data.get("breakers"):
            row("breakers", _breakers(data["breakers"]))
        if data.get("worker"):
            row("outages", _outages(data.get("outages") or {}))
            queued = int(data.get("messages_queued") or 0)
            row("outbox", f"{queued} message{'s' * (queued != 1)} queued")
            row("jobs", f"{data.get('jobs_active') or 0} running")
        if data.get("backend") == "redis":
            lease = data.get("lease")
            row("redis", str(data.get("redis") or "—") + (f", lease {lease}" if lease else ""))
    last = data.get("last_shutdown") or {}
    if last:
        row("last stop", last_stop(last))
    exit_info = data.get("last_exit") or {}
    if exit_info.get("code") not in (None, 0) or state in ("backoff", "crashloop"):
        after = exit_info.get("uptime_s")
        lasted = f" after {float(after):.1f}s" if isinstance(after, int | float) else ""
        row("last exit", f"code {exit_info.get('code', '?')}{lasted}")
    for line in (data.get("last_lines") or [])[-10:]:
        table.add_row("", Text(str(line), "dim"))  # worker output: plain text, never markup
    return table


@output.command
def status(
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    every: AllOption = False,
    watch_: WatchOption = False,
    interval: IntervalOption = 1.0,
) -> None:
    """Health summary: state and why, pids, breakers, outages, backlog, jobs, Redis, last stop."""
    directory = resolve_state_dir(state_dir)

    def fetch() -> dict[str, Any]:
        data: dict[str, Any] = reads.read(directory, ("status",), every=every)
        return data

    if every:
        from khronos_cli.cli.replicas import render_status as draw
    else:
        draw = render
    if watch_:
        from khronos_cli.cli.watch import watch

        def worker(data: dict[str, Any]) -> Any:
            return None if every else data.get("worker_pid")

        watch(fetch, draw, interval=interval, as_json=as_json, identity=worker)
        return
    data = fetch()
    if as_json:
        output.print_json(data)
    else:
        output.show(draw(data))
    if not every and reads.stopped(data):
        raise NotRunningError(str(data["socket"]))
