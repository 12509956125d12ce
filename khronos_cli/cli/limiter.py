"""``khronos limiter``: every rate limiter's counts and rate, once or live."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from khronos_cli.cli import output, reads
from khronos_cli.cli.options import (
    AllOption,
    IntervalOption,
    JSONOption,
    Limiter,
    StateDirOption,
    resolve_state_dir,
)

app = typer.Typer(help="See the rate limiters: executing, queued, done, dropped, rate.")

_BARS = " ▁▂▃▄▅▆▇█"


def _fetch(state_dir: Any, every: bool, names: list[Limiter] | None = None) -> dict[str, Any]:
    """``limiter --json [--all]``'s data, only the limiters in ``names`` when given."""
    data: dict[str, Any] = reads.read(resolve_state_dir(state_dir), ("limiter",), every=every)
    if not names:
        return data
    keep = {name.value for name in names}
    if every:
        for replica in data["replicas"]:
            replica["limiters"] = _only(replica.get("limiters", {}), keep)
        data["totals"] = _only(data["totals"], keep)
        return data
    return _only(data, keep)


def _only(limiters: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    return {name: snap for name, snap in limiters.items() if name in keep}


def _render_all(data: dict[str, Any]) -> Any:
    from khronos_cli.cli import replicas

    return replicas.render_each(data["replicas"], "limiters", render, data["totals"])


def sparkline(values: list[float], width: int = 15) -> str:
    """The last minute in ``width`` characters (means of its seconds), scaled to its peak."""
    if not values:
        return ""
    step = max(1, -(-len(values) // width))
    means = [sum(values[i : i + step]) / step for i in range(0, len(values), step)]
    peak = max(means) or 1.0
    return "".join(_BARS[min(8, round(8 * v / peak))] for v in means)


def render(limiters: dict[str, Any]) -> Table:
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


@app.callback(invoke_without_command=True)
@output.command
def limiter(
    ctx: typer.Context,
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    every: AllOption = False,
) -> None:
    """Every limiter: executing, queued, done, dropped and the current rate."""
    if ctx.invoked_subcommand is not None:
        return
    data = _fetch(state_dir, every)
    if as_json:
        output.print_json(data)
    else:
        output.show(_render_all(data) if every else render(data))


@app.command("watch")
@output.command
def watch_limiters(
    names: Annotated[
        list[Limiter] | None,
        typer.Argument(help="Only these limiters (default: all).", show_default=False),
    ] = None,
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    interval: IntervalOption = 1.0,
    every: AllOption = False,
) -> None:
    """A live view refreshed in place until Ctrl-C (NDJSON lines with --json)."""
    from khronos_cli.cli.watch import watch

    draw = _render_all if every else render
    watch(lambda: _fetch(state_dir, every, names), draw, interval=interval, as_json=as_json)
