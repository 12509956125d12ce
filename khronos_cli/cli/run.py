"""``khronos run``: start the bot (supervised, in the foreground unless --detach)."""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from khronos_cli.cli import output
from khronos_cli.cli.options import ConfigOption, StateDirOption, number, resolve_state_dir


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@output.command
def run(
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="No token, no network: local stand-ins and users.")
    ] = False,
    config: ConfigOption = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Public HTTP port (0 picks a free one)."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; return once ready.")
    ] = False,
    no_supervise: Annotated[
        bool,
        typer.Option("--no-supervise", help="Run the worker alone (systemd, pm2, k8s restart it)."),
    ] = False,
    users: Annotated[
        int, typer.Option("--users", min=0, max=10_000, help="Sandbox: simulated users.")
    ] = 5,
    rate: Annotated[
        float, typer.Option("--rate", help="Sandbox: their messages per second (0.01 to 1000).")
    ] = 0.5,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format", help="text or json lines (default: the config's log.format, text)."
        ),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option("--log-level", help="The least severe level logged (default: info)."),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Start the supervisor and the bot worker; logs go to stderr and <state-dir>/khronos.log
    (to stderr only with --no-supervise, unless the config's log.file names one)."""
    from khronos_cli import config as config_module
    from khronos_cli import preflight, statedir
    from khronos_cli.control import instance
    from khronos_cli.errors import AlreadyRunningError
    from khronos_cli.runtime import launch

    rate = number(rate, "--rate", least=0.01, most=1000.0)
    # The options win over [log] and reach the worker (and a --detach'ed run) as variables.
    overrides = {
        name: option.value
        for name, option in (("KHRONOS_LOG_FORMAT", log_format), ("KHRONOS_LOG_LEVEL", log_level))
        if option is not None
    }
    # Ours or refused (exit 78) before anything in it is read, its khronos.toml included.
    directory = statedir.prepare(resolve_state_dir(state_dir))
    env = {**os.environ, **overrides}
    settings = config_module.load(config, env, state_dir=directory)  # a bad config: exit 78 now
    if not sandbox:  # no token or no key: refused now, not a worker polling with nothing
        preflight.require_credentials(settings)
    preflight.check_event_loop(env)  # KHRONOS_EVENT_LOOP: a typo is refused before the fork
    preflight.check_public_port(settings)  # beyond loopback: a bearer token, or refused
    if instance.supervisor_pid(directory) is not None or instance.answers(directory):
        raise AlreadyRunningError(str(directory))  # before the port: that one is ours
    if port is not None:
        settings = dataclasses.replace(settings, http_port=port)
    # A taken port, a host that is not this machine's: exit 78 now, before anything is forked.
    preflight.check_http(settings, env=None if port is None else {"KHRONOS_HTTP_PORT": str(port)})
    if detach:
        # The same run in the foreground of a process of its own (the options as parsed).
        command = [sys.executable, "-m", "khronos_cli", "run", "--state-dir", str(directory)]
        command += ["--sandbox"] * sandbox + ["--no-supervise"] * no_supervise
        command += ["--config", str(config)] * (config is not None)
        command += ["--port", str(port)] * (port is not None)
        command += ["--users", str(users), "--rate", str(rate)]
        pid = launch.detach(command, directory, log=settings.log, env=overrides)
        output.stderr.print(
            f"khronos is running (pid {pid}); `khronos stop` stops it", markup=False
        )
        return
    code = launch.launch(
        directory,
        settings=settings,
        config=Path(config) if config else None,
        port=port,
        sandbox=sandbox,
        supervise=not no_supervise,
        users=users,
        rate=rate,
        env=overrides,
    )
    raise typer.Exit(code)
