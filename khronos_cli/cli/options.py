"""Options every command shares, the checks of numeric options, and the one way to reach the
running worker.

A number or duration an option cannot use (``--for 1e20``, ``--for nonsense``, ``--interval
inf``, ``--probability nan``) is a usage error: one line on stderr and exit 2, before anything is
asked of the worker. Durations are ``parse_duration``'s grammar (``500ms``, ``30s``, ``5m``,
``1h``, or seconds) and every one sent to the worker is at most ``MAX_DURATION`` (15 min), the
control socket's own cap.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from khronos_cli.cli import output
from khronos_cli.control.protocol import DEPENDENCIES, MAX_DURATION
from khronos_cli.errors import ExitCode
from khronos_cli.settings import BREAKER_DEFAULTS, LIMITER_DEFAULTS

if TYPE_CHECKING:
    from khronos_cli.control.client import ControlClient

MAX_INTERVAL = 3600.0  # a watch refreshes at least hourly

# The names an argument takes: checked before asking (a usage error lists them) and written into
# the shell completions. The breakers and limiters are the ones the config knows (no other can
# exist); outages can be injected into the dependencies the control socket names.
Breaker = enum.StrEnum("Breaker", {name: name for name in BREAKER_DEFAULTS})  # type: ignore[misc]
Limiter = enum.StrEnum("Limiter", {name: name for name in LIMITER_DEFAULTS})  # type: ignore[misc]
Dependency = enum.StrEnum("Dependency", {name: name for name in DEPENDENCIES})  # type: ignore[misc]

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="KHRONOS_STATE_DIR",
        help="Where the socket, logs and state live (default: $XDG_STATE_HOME/khronos).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="khronos.toml to read (default: <state-dir>/khronos.toml)."),
]
JSONOption = Annotated[bool, typer.Option("--json", help="Print stable JSON for scripts.")]
AllOption = Annotated[
    bool, typer.Option("--all", help="Every replica on the shared Redis, and the totals.")
]
IntervalOption = Annotated[
    float, typer.Option("--interval", help="Seconds between refreshes (0.1 to 3600).")
]
WatchOption = Annotated[
    bool, typer.Option("--watch", help="Redraw live until Ctrl-C (NDJSON lines with --json).")
]


def usage_error(message: str) -> NoReturn:
    """One line on stderr and exit 2, as for any other usage error."""
    output.fail(f"{message}; see --help", ExitCode.USAGE)


def seconds(value: str, option: str, *, most: float = MAX_DURATION, zero: bool = False) -> float:
    """The duration ``value`` of ``option`` in seconds: above zero (or zero when ``zero``) and at
    most ``most``; a usage error otherwise."""
    from khronos_cli.config import parse_duration
    from khronos_cli.errors import ConfigError

    try:
        parsed = parse_duration(value, key=option)
    except ConfigError:
        usage_error(f"{option} {value!r}: expected a duration like 500ms, 30s, 5m or 1h")
    if parsed > most or (parsed == 0 and not zero):
        lowest = "0" if zero else "above 0"
        usage_error(f"{option} {value!r}: expected {lowest} and at most {most:g}s")
    return parsed


def number(value: float, option: str, *, least: float, most: float) -> float:
    """``value`` when it is finite and within ``least..most``; a usage error otherwise."""
    if not math.isfinite(value) or not least <= value <= most:
        usage_error(f"{option} {value:g}: expected a number from {least:g} to {most:g}")
    return value


def resolve_state_dir(state_dir: Path | None) -> Path:
    from khronos_cli.statedir import default_state_dir

    return (state_dir or default_state_dir()).expanduser()


def client(state_dir: Path | None) -> ControlClient:
    from khronos_cli.control.client import ControlClient

    return ControlClient(resolve_state_dir(state_dir))
