"""``khronos breakers``: every circuit breaker, live; force one open or closed."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from khronos_cli.cli import options, output
from khronos_cli.cli.options import (
    AllOption,
    IntervalOption,
    JSONOption,
    StateDirOption,
    client,
)

app = typer.Typer(help="See the circuit breakers, force one open or closed.")

_STYLE = {"closed": "green", "half-open": "yellow", "open": "bold red"}


def _fetch(state_dir: Any) -> dict[str, Any]:
    with client(state_dir) as control:
        data: dict[str, Any] = control.get("/breakers")
        return data


def render(breakers: dict[str, Any]) -> Table:
    table = Table(title="circuit breakers", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("err %", justify="right")
    table.add_column("ok/fail/tmo/rej", justify="right")
    table.add_column("fb", justify="right")
    table.add_column("p50/p99 ms", justify="right")
    table.add_column("trial in", justify="right")
    table.add_column("forced")
    for name, snap in breakers.items():
        stats = snap.get("stats", {})
        latency = stats.get("latency_ms") or {}
        state = str(snap.get("state", "?"))
        next_trial = snap.get("next_trial_in")
        counts = "/".join(str(stats.get(k, 0)) for k in ("successes", "failures", "timeouts",
                                                         "rejects"))  # fmt: skip
        table.add_row(
            Text(name),
            Text(state, style=_STYLE.get(state, "")),
            f"{stats.get('error_percentage', 0):.1f}",
            counts,
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


@app.callback(invoke_without_command=True)
@output.command
def breakers(
    ctx: typer.Context,
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    watch_: Annotated[bool, typer.Option("--watch", help="Redraw live until Ctrl-C.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when any breaker is open (for monitoring).")
    ] = False,
    interval: IntervalOption = 1.0,
    every: AllOption = False,
) -> None:
    """Every breaker: state, error %, counts, latency, next trial, forced."""
    if ctx.invoked_subcommand is not None:
        return
    if every:
        from khronos_cli.cli import replicas

        found = replicas.fetch(state_dir)
        totals = replicas.breaker_totals(found)
        if as_json:
            output.print_json({"replicas": found, "totals": totals})
        else:
            output.stdout.print(replicas.render_each(found, "breakers", render, totals))
        return
    if watch_:
        from khronos_cli.cli.watch import watch

        watch(lambda: _fetch(state_dir), render, interval=interval, as_json=as_json)
        return
    data = _fetch(state_dir)
    if as_json:
        output.print_json(data)
    else:
        output.stdout.print(render(data))
    if check and any(snap.get("state") == "open" for snap in data.values()):
        raise typer.Exit(1)


DurationOption = Annotated[
    str, typer.Option("--for", help="How long the force lasts before it heals itself (max 15m).")
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (shown in the table).")]


def _force(state_dir: Any, name: str, action: str, duration: str, reason: str) -> None:
    seconds = options.seconds(duration, "--for")
    with client(state_dir) as control:
        snap = control.post(f"/breakers/{name}/{action}", {"for": seconds, "reason": reason})
    output.stderr.print(f"{name}: {snap.get('state', action)}", markup=False)


@app.command("open")
@output.command
def force_open(
    name: str,
    state_dir: StateDirOption = None,
    duration: DurationOption = "5m",
    reason: ReasonOption = "operator",
) -> None:
    """Force a breaker open (calls fail fast) until --for runs out."""
    _force(state_dir, name, "open", duration, reason)


@app.command("close")
@output.command
def force_close(
    name: str,
    state_dir: StateDirOption = None,
    duration: DurationOption = "5m",
    reason: ReasonOption = "operator",
) -> None:
    """Force a breaker closed (calls go through) until --for runs out."""
    _force(state_dir, name, "close", duration, reason)


@app.command("reset")
@output.command
def reset(name: str, state_dir: StateDirOption = None) -> None:
    """Clear a forced state and close the breaker."""
    with client(state_dir) as control:
        control.post(f"/breakers/{name}/reset", {})
    output.stderr.print(f"{name}: reset", markup=False)
