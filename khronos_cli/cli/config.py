"""``khronos config``: check the configuration and print the effective settings."""

from __future__ import annotations

from typing import Annotated

import typer

from khronos_cli.cli import output
from khronos_cli.cli.options import ConfigOption, JSONOption, StateDirOption

__all__ = ["config"]


@output.command
def config(
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Check for `khronos run --sandbox` (no secrets).")
    ] = False,
) -> None:
    """Check the configuration and print the effective settings (exit 78 when invalid or when
    a secret the bot needs is missing, outside --sandbox)."""
    from khronos_cli.cli import settings_view

    settings_view.check(config, state_dir, as_json=as_json, sandbox=sandbox)
