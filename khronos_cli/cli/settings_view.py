"""``khronos config``'s work, without Typer: load and check the settings, print them.

The Typer command (:mod:`.config`) and the fast path (:mod:`.fast`) both call :func:`check`, so
both print the same bytes and exit the same way: 78 with one line when the configuration is
invalid, or (outside ``--sandbox``) when a secret the bot needs is missing — after the tables.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from khronos_cli.cli import plain
from khronos_cli.cli.grid import Group, Table, Text
from khronos_cli.control.protocol import encode_document

__all__ = ["check"]


def check(
    config: Path | str | None, state_dir: Path | None, *, as_json: bool, sandbox: bool
) -> None:
    """Print the effective settings (JSON, or tables); raise ConfigError when they cannot work."""
    from khronos_cli import config as config_module
    from khronos_cli import preflight

    settings = config_module.load(config, state_dir=state_dir)
    data = settings.to_json()
    missing = [] if sandbox else preflight.missing_credentials(settings)
    data["missing_credentials"] = missing
    if as_json:
        sys.stdout.write(encode_document(data))
        sys.stdout.flush()
    else:
        if not missing:
            source = settings.config_path or "defaults and environment (no khronos.toml found)"
            sys.stderr.write(f"config ok: {source}\n")  # as rich prints it: no markup, no wrap
        _print_settings(data)
    if missing:
        preflight.require_credentials(settings)  # the one line naming them, exit 78


def _print_settings(data: dict[str, Any]) -> None:
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
    plain.show(Group(*tables))


def _cell(value: Any) -> str:
    if value is None or value == []:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
