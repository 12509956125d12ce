"""What the read commands draw: tables (:mod:`.grid`) from the control socket's JSON, with
neither Typer nor rich.

``khronos status``, ``breakers``, ``limiter`` and ``outage list`` (and their ``--all`` forms,
through :mod:`.replicas`) draw these, from the Typer commands and from the fast path
(:mod:`.fast`) alike, so both print the same bytes. On a terminal they are drawn by rich;
elsewhere they are printed as plain columns (:mod:`.plain`).
"""

from __future__ import annotations

import time
from typing import Any

from khronos_cli.cli.grid import Table, Text
from khronos_cli.control.state import STOPPED

__all__ = [
    "breakers",
    "breakers_all",
    "last_stop",
    "limiters",
    "limiters_all",
    "outages",
    "sparkline",
    "status",
]


_STATUS_STYLE = {
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


def status(data: dict[str, Any]) -> Table:
    """``khronos status``: the health summary of one instance."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    state = str(data["state"])

    def row(key: str, value: str | Text) -> None:
        table.add_row(key, value if isinstance(value, Text) else Text(value))

    row("state", Text(state, _STATUS_STYLE.get(state, "")))
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
        if data.get("backup"):
            row("backup", backup_row(data["backup"]))
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


def backup_row(backup: dict[str, Any]) -> Text:
    """The last copy (when, size, how long) or the last failure when that is newer, the counts,
    and the next scheduled copy."""
    ok, failure = backup.get("last_ok") or {}, backup.get("last_failure") or {}
    text = Text()
    good = ""
    if ok:
        took = float(ok.get("duration_s") or 0)
        good = f"{_clock(ok.get('finished_at'))} ({_bytes(ok.get('size'))}, {took:.2f}s)"
    if failure and float(failure.get("at") or 0) >= float(ok.get("finished_at") or 0):
        text.append(f"FAILED {_clock(failure.get('at'))}: {failure.get('error')}", "bold red")
        if good:
            text.append(f"; last ok {good}")
    elif good:
        text.append(f"ok {good}", "green")
    else:
        text.append("none taken yet")
    counts = f"{backup.get('ok', 0)} ok, {backup.get('failed', 0)} failed"
    if backup.get("running"):
        counts += ", one being written"
    scheduled = backup.get("interval") and backup.get("next_at")
    when = f"next {_clock(backup.get('next_at'))}" if scheduled else "not scheduled"
    text.append(f" · {counts} · {when}", "dim")
    return text


def _clock(at: object) -> str:
    """A unix time as the local ``HH:MM:SS``."""
    if not isinstance(at, int | float):
        return "—"
    return time.strftime("%H:%M:%S", time.localtime(at))


def _bytes(size: object) -> str:
    value = float(size) if isinstance(size, int | float) else 0.0
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


_BREAKER_STATE_STYLE = {"closed": "green", "half-open": "yellow", "open": "bold red"}
_COUNTS = ("successes", "failures", "timeouts", "rejects")


def breakers(breakers: dict[str, Any]) -> Table:
    """``khronos breakers``: every breaker's state, counts, latency and overrides."""
    table = Table(title="circuit breakers", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("err %", justify="right")
    table.add_column("ok/fail/tmo/rej", justify="right", no_wrap=True)
    table.add_column("fb", justify="right")
    table.add_column("p50/p99 ms", justify="right", no_wrap=True)
    table.add_column("trial in", justify="right")
    table.add_column("forced")
    for name, snap in breakers.items():
        stats = snap.get("stats", {})
        latency = stats.get("latency_ms") or {}
        state = str(snap.get("state", "?"))
        next_trial = snap.get("next_trial_in")
        table.add_row(
            Text(name),
            Text(state, style=_BREAKER_STATE_STYLE.get(state, "")),
            f"{float(stats.get('error_percentage') or 0):.1f}",
            "/".join(str(stats.get(k, 0)) for k in _COUNTS),
            str(stats.get("fallbacks", 0)),
            f"{_ms(latency.get('p50'))}/{_ms(latency.get('p99'))}",
            "—" if next_trial is None else f"{next_trial:.1f}s",
            _forced(snap.get("forced")),
        )
    return table


def _forced(forced: dict[str, Any] | None) -> Text:
    if not forced:
        return Text("—")
    left = forced.get("expires_in") or 0
    return Text(f"{forced.get('state')}: {forced.get('reason')} ({left:.0f}s left)", "magenta")


def _ms(value: Any) -> str:
    return "—" if value is None else f"{float(value):.0f}"


def breakers_all(data: dict[str, Any]) -> Any:
    """``khronos breakers --all``: one table per replica, then the totals."""
    from khronos_cli.cli import replicas

    return replicas.render_each(data["replicas"], "breakers", breakers, data["totals"])


_BARS = " ▁▂▃▄▅▆▇█"


def limiters_all(data: dict[str, Any]) -> Any:
    """``khronos limiter --all``: one table per replica, then the totals."""
    from khronos_cli.cli import replicas

    return replicas.render_each(data["replicas"], "limiters", limiters, data["totals"])


def sparkline(values: list[float], width: int = 15) -> str:
    """The last minute in ``width`` characters (means of its seconds), scaled to its peak."""
    if not values:
        return ""
    step = max(1, -(-len(values) // width))
    means = [sum(values[i : i + step]) / step for i in range(0, len(values), step)]
    peak = max(means) or 1.0
    return "".join(_BARS[min(8, round(8 * v / peak))] for v in means)


def limiters(limiters: dict[str, Any]) -> Table:
    """``khronos limiter``: each limiter's counts, rate and last minute."""
    table = Table(title="rate limiters", title_justify="left")
    table.add_column("name", no_wrap=True)
    for column in ("exec", "queued", "done", "dropped", "failed", "rate/s", "keys"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("last minute", no_wrap=True)
    for name, snap in limiters.items():
        halted = float(snap.get("halted_for") or 0)
        dropped = int(snap.get("dropped", 0))
        table.add_row(
            Text(name + (f" (halted {halted:.0f}s)" if halted else ""), "red" if halted else ""),
            str(snap.get("executing", 0)),
            str(snap.get("queued", 0)),
            str(snap.get("done", 0)),
            Text(str(dropped), "red" if dropped else ""),
            str(snap.get("failed", 0)),
            f"{float(snap.get('rate') or 0):.1f}",
            str(snap.get("keys", "—")),
            Text(sparkline([float(v) for v in snap.get("history") or []]), "cyan"),
        )
    return table


def outages(outages: dict[str, Any]) -> Table:
    """``khronos outage list``: the active outages."""
    table = Table(title="outages", title_justify="left")
    table.add_column("name")
    table.add_column("mode")
    for column in ("probability", "remaining", "hits"):
        table.add_column(column, justify="right")
    for name, outage in outages.items():
        table.add_row(
            Text(name),
            str(outage.get("mode")),
            f"{float(outage.get('probability', 1)):.0%}",
            f"{float(outage.get('remaining_s', 0)):.0f}s",
            str(outage.get("hits", 0)),
        )
    return table
