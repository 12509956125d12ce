"""``khronos breakers``: every circuit breaker, live; force one open or closed."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from khronos_cli.cli import options, output, reads, views
from khronos_cli.cli.options import (
    AllOption,
    Breaker,
    IntervalOption,
    JSONOption,
    StateDirOption,
    WatchOption,
    client,
    resolve_state_dir,
)

app = typer.Typer(help="See the circuit breakers, force one open or closed.")


@app.callback(invoke_without_command=True)
@output.command
def breakers(
    ctx: typer.Context,
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    watch_: WatchOption = False,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when any breaker is open (for monitoring).")
    ] = False,
    interval: IntervalOption = 1.0,
    every: AllOption = False,
) -> None:
    """Every breaker: state, error %, counts, latency, next trial, forced."""
    if ctx.invoked_subcommand is not None:
        return
    directory = resolve_state_dir(state_dir)

    def fetch() -> dict[str, Any]:
        data: dict[str, Any] = reads.read(directory, ("breakers",), every=every)
        return data

    draw = views.breakers_all if every else views.breakers
    if watch_:
        from khronos_cli.cli.watch import watch

        watch(fetch, draw, interval=interval, as_json=as_json)
        return
    data = fetch()
    if as_json:
        output.print_json(data)
    else:
        output.show(draw(data))
    if check and reads.any_open(data):
        raise typer.Exit(1)


DurationOption = Annotated[
    str, typer.Option("--for", help="How long the force lasts before it heals itself (max 15m).")
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (shown in the table).")]
NameArgument = Annotated[Breaker, typer.Argument(help="The breaker.", show_default=False)]


def _force(state_dir: Any, name: Breaker, action: str, body: dict[str, Any], as_json: bool) -> None:
    with client(state_dir) as control:
        snap = control.post(f"/breakers/{name.value}/{action}", body)
    if as_json:
        output.print_json({name.value: snap})
        return
    forced = snap.get("forced") or {}
    until = f" for {forced['expires_in']:.0f}s" if forced.get("expires_in") else ""
    state = snap.get("state", "?")
    done = f"reset, now {state}" if action == "reset" else f"{state}{until}"
    output.stderr.print(f"{name.value}: {done}", markup=False)


@app.command("open")
@output.command
def force_open(
    name: NameArgument,
    state_dir: StateDirOption = None,
    duration: DurationOption = "5m",
    reason: ReasonOption = "operator",
    as_json: JSONOption = False,
) -> None:
    """Force a breaker open (calls fail fast) until --for runs out."""
    body = {"for": options.seconds(duration, "--for"), "reason": reason}
    _force(state_dir, name, "open", body, as_json)


@app.command("close")
@output.command
def force_close(
    name: NameArgument,
    state_dir: StateDirOption = None,
    duration: DurationOption = "5m",
    reason: ReasonOption = "operator",
    as_json: JSONOption = False,
) -> None:
    """Force a breaker closed (calls go through) until --for runs out."""
    body = {"for": options.seconds(duration, "--for"), "reason": reason}
    _force(state_dir, name, "close", body, as_json)


@app.command("reset")
@output.command
def reset(
    name: NameArgument, state_dir: StateDirOption = None, as_json: JSONOption = False
) -> None:
    """Clear a forced state and close the breaker."""
    _force(state_dir, name, "reset", {}, as_json)
