"""Options every command shares, and the one way to reach the running worker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from khronos_cli.control.client import ControlClient

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="KHRONOS_STATE_DIR",
        help="Where the socket, logs and state live [default: $XDG_STATE_HOME/khronos].",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="khronos.toml to read [default: <state-dir>/khronos.toml]."),
]
JSONOption = Annotated[bool, typer.Option("--json", help="Print stable JSON for scripts.")]
AllOption = Annotated[
    bool, typer.Option("--all", help="Every replica on the shared Redis, and the totals.")
]
IntervalOption = Annotated[
    float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")
]


def resolve_state_dir(state_dir: Path | None) -> Path:
    from khronos_cli.config import default_state_dir

    return (state_dir or default_state_dir()).expanduser()


def client(state_dir: Path | None) -> ControlClient:
    from khronos_cli.control.client import ControlClient

    return ControlClient(resolve_state_dir(state_dir))
