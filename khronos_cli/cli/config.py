"""``khronos config``: check the configuration and print the effective settings."""

from __future__ import annotations

from typing import Annotated, Any

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
    from khronos_cli import config as config_module
    from khronos_cli import preflight

    settings = config_module.load(config, state_dir=state_dir)
    data = settings.to_json()
    missing = [] if sandbox else preflight.missing_credentials(settings)
    data["missing_credentials"] = missing
    if as_json:
        output.print_json(data)
    else:
        if not missing:
            source = settings.config_path or "defaults and environment (no khronos.toml found)"
            output.stderr.print(f"config ok: {source}", markup=False)
        _print_settings(data)
    if missing:
        preflight.require_credentials(settings)  # the one line naming them, exit 78


def _print_settings(data: dict[str, Any]) -> None:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    general = Table("setting", "value", title="khronos", title_justify="left")
    for key, value in data.items():
        if key not in ("breakers", "limiters"):
            general.add_row(key, Text(_cell(value)))
    tables = [general]
    for group in ("breakers", "limiters"):
        items = data[group]
        table = Table("", *items, title=group, title_justify="left")
        fields = [key for key in next(iter(items.values())) if key != "name"]
        for key in fields:
            table.add_row(key, *(Text(_cell(item[key])) for item in items.values()))
        tables.append(table)
    output.show(Group(*tables))


def _cell(value: Any) -> str:
    if value is None or value == []:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
