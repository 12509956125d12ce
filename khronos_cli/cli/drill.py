"""``khronos outage drill``: a rehearsed outage with a verdict (Chaos Toolkit's discipline).

The experiment itself is :mod:`khronos_cli.control.drill` (steady state, the outage, users
served, recovery); this module parses the options, runs it against the control socket and prints
the verdict: a table on stdout (or the JSON report with ``--json``); exit 0 when every check
passed, 1 otherwise.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from khronos_cli.cli import options, output
from khronos_cli.cli.grid import Table, Text
from khronos_cli.cli.options import JSONOption, StateDirOption, client
from khronos_cli.cli.outage import (
    DOWN,
    Dependency,
    LatencyOption,
    Mode,
    ProbabilityOption,
    StatusOption,
)
from khronos_cli.control.drill import Drill, interrupt, on_signals


def render(report: dict[str, Any]) -> Table:
    title = f"drill: {report['name']} {report['mode']}"
    table = Table(
        "check", "result", "seconds", "limit", "detail", title=title, title_justify="left"
    )
    for check in report["checks"]:
        passed = check["passed"]
        result = Text("passed", "green") if passed else Text("n/a", "dim")
        if passed is False:
            result = Text("FAILED", "bold red")
        seconds, limit = check["seconds"], check["limit_s"]
        table.add_row(
            Text(check["check"]),
            result,
            "—" if seconds is None else f"{seconds:.2f}",
            "—" if limit is None else f"{limit:g}",
            Text(check["detail"]),
        )
    return table


@output.command
def drill(
    name: Dependency,
    mode: Annotated[Mode, typer.Option("--mode", help="How calls fail.")] = DOWN,
    duration: Annotated[
        str, typer.Option("--for", help="How long the outage lasts (also its expiry; at most 15m).")
    ] = "45s",
    open_within: Annotated[
        str,
        typer.Option(
            "--expect-open-within", help="The breaker must open within this (at most --for)."
        ),
    ] = "20s",
    recovery_within: Annotated[
        str,
        typer.Option("--expect-recovery-within", help="It must leave open within this after."),
    ] = "60s",
    require_traffic: Annotated[
        bool, typer.Option("--require-traffic", help="Fail when no user message arrived.")
    ] = False,
    probability: ProbabilityOption = 1.0,
    status: StatusOption = 503,
    latency: LatencyOption = "2s",
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
) -> None:
    """Rehearse an outage of NAME: steady state, breaker opens, users served, recovery, verdict."""
    hold = options.seconds(duration, "--for")
    expect_open = min(options.seconds(open_within, "--expect-open-within"), hold)
    spec = {
        "name": name.value,
        "mode": mode.value,
        "for": hold,
        "probability": options.number(probability, "--probability", least=0.0, most=1.0),
        "status": status,
        "latency": options.seconds(latency, "--latency", zero=True),
    }
    with client(state_dir) as control, on_signals(interrupt):
        run = Drill(
            control,
            spec,
            open_within=expect_open,
            recovery_within=options.seconds(recovery_within, "--expect-recovery-within"),
            require_traffic=require_traffic,
            say=lambda line: output.stderr.print(line, markup=False),
        )
        run.run()
    report = run.report()
    if as_json:
        output.print_json(report)
    else:
        output.show(render(report))
    verdict = "passed" if run.passed else "FAILED"
    output.stderr.print(f"drill {name.value}: {verdict}", markup=False)
    raise typer.Exit(0 if run.passed else 1)
