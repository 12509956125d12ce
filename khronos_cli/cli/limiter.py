"""``khronos limiter``: every rate limiter's counts and rate, once or live."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from khronos_cli.cli import output, reads, views
from khronos_cli.cli.options import (
    AllOption,
    IntervalOption,
    JSONOption,
    Limiter,
    StateDirOption,
    resolve_state_dir,
)

app = typer.Typer(help="See the rate limiters: executing, queued, done, dropped, rate.")


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
        output.show(views.limiters_all(data) if every else views.limiters(data))


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

    draw = views.limiters_all if every else views.limiters
    watch(lambda: _fetch(state_dir, every, names), draw, interval=interval, as_json=as_json)
