"""The Typer application: global options and the command groups."""

from __future__ import annotations

from typing import Annotated

import typer

from khronos_cli import __version__

app = typer.Typer(
    name="khronos",
    help="Keep a Telegram bot that talks to LLM APIs alive, and see and steer its resilience live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"khronos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """khronos: circuit breakers, rate limits and a graceful stop for a Telegram LLM bot."""


def _register() -> None:
    from khronos_cli.cli import (
        alerts,
        backup,
        breakers,
        completion,
        config,
        drill,
        limiter,
        outage,
        restart,
        run,
        status,
        stop,
    )

    app.command("config")(config.config)
    app.command("run")(run.run)
    app.command("status")(status.status)
    app.add_typer(breakers.app, name="breakers")
    app.add_typer(limiter.app, name="limiter")
    outage.app.command("drill")(drill.drill)
    app.add_typer(outage.app, name="outage")
    app.command("stop")(stop.stop)
    app.command("restart")(restart.restart)
    app.add_typer(alerts.app, name="alerts")
    app.command("backup")(backup.backup)
    app.command("restore")(backup.restore)
    app.command("completion")(completion.completion)


_register()
