"""``khronos outage``: inject a test outage into the live worker's calls, list them, end them."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from khronos_cli.cli import options, output, reads, views
from khronos_cli.cli.options import Dependency, JSONOption, StateDirOption, client
from khronos_cli.control.protocol import OUTAGE_MODES

__all__ = [
    "DOWN",
    "Dependency",
    "LatencyOption",
    "Mode",
    "ProbabilityOption",
    "StatusOption",
    "app",
]

app = typer.Typer(help="Inject test outages into the live bot so its breakers really trip.")


Mode = enum.StrEnum("Mode", {mode: mode for mode in OUTAGE_MODES})  # type: ignore[misc]
DOWN = Mode("down")


ProbabilityOption = Annotated[
    float, typer.Option("--probability", help="Share of calls hit (0 to 1).")
]
StatusOption = Annotated[
    int, typer.Option("--status", help="HTTP status for --mode errors (503, or 429).")
]
LatencyOption = Annotated[str, typer.Option("--latency", help="Added delay for --mode slow.")]


@app.command("start")
@output.command
def start(
    name: Dependency,
    mode: Annotated[Mode, typer.Option("--mode", help="How calls fail.")] = DOWN,
    duration: Annotated[
        str, typer.Option("--for", help="How long (it always ends by itself; at most 15m).")
    ] = "60s",
    probability: ProbabilityOption = 1.0,
    status: StatusOption = 503,
    latency: LatencyOption = "2s",
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
) -> None:
    """Make the live worker's calls to NAME fail, so its breaker trips for real."""
    spec = {
        "name": name.value,
        "mode": mode.value,
        "for": options.seconds(duration, "--for"),
        "probability": options.number(probability, "--probability", least=0.0, most=1.0),
        "status": status,
        "latency": options.seconds(latency, "--latency", zero=True),
    }
    with client(state_dir) as control:
        outage = control.post("/outages", spec)
    if as_json:
        output.print_json({name.value: outage})
        return
    output.stderr.print(
        f"outage {name.value}: {mode.value} for {spec['for']:g}s (ends by itself; "
        f"`khronos outage stop {name.value}` ends it now)",
        markup=False,
    )


@app.command("list")
@output.command
def list_outages(state_dir: StateDirOption = None, as_json: JSONOption = False) -> None:
    """The active outages with their remaining time."""
    outages = reads.read(options.resolve_state_dir(state_dir), ("outage", "list"))
    if as_json:
        output.print_json(outages)
    elif not outages:
        output.stderr.print("no outage is active")
    else:
        output.show(views.outages(outages))


@app.command("stop")
@output.command
def stop(
    name: Annotated[
        Dependency | None, typer.Argument(help="One outage; all when left out.")
    ] = None,
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
) -> None:
    """End one outage now, or all of them."""
    with client(state_dir) as control:
        ended = reads.keyed(control.delete("/outages" + (f"/{name.value}" if name else "")))
    if as_json:
        output.print_json(ended)
    elif ended:
        output.stderr.print(f"ended {len(ended)} outage(s): {', '.join(ended)}", markup=False)
    else:
        output.stderr.print("no outage was active")
