"""``khronos backup`` and ``khronos restore``: copies of ``<state-dir>/khronos.db``.

With an instance running, ``backup`` asks its worker over the control socket (the copy is taken
there, from SQLite's online backup, while the bot answers). With none, the CLI takes the same
copy itself: nothing writes the file, SQLite's locks keep it whole should a ``khronos run``
start meanwhile, and ``(offline)`` says so. ``--list`` shows the copies in the backup directory
(``[backup] dir``), each hashed against its checksum. ``restore`` runs with the bot stopped only
(:mod:`khronos_cli.backup.restore`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from khronos_cli.cli import output
from khronos_cli.cli.options import ConfigOption, JSONOption, StateDirOption, resolve_state_dir
from khronos_cli.errors import KhronosError, NotRunningError

__all__ = ["backup", "restore"]

BACKUP_TIMEOUT = 24 * 3600.0  # the worker answers when the copy is written, however big


@output.command
def backup(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A file to write, or a directory to write a new khronos-<time>.db in "
            "(default: the backup directory, \\[backup] dir).",
            show_default=False,
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the backups in the backup directory.")
    ] = False,
    state_dir: StateDirOption = None,
    config: ConfigOption = None,
    as_json: JSONOption = False,
) -> None:
    """A consistent copy of the live database (the bot keeps answering), 0600, with its sha256."""
    directory = resolve_state_dir(state_dir)
    if list_:
        if path is not None:
            output.fail("--list takes no PATH; see --help", 2)
        _print_listing(_listing(directory, config), as_json=as_json)
        return
    target = None if path is None else path.expanduser().absolute()
    from khronos_cli.control.client import ControlClient

    try:
        with ControlClient(directory, timeout=BACKUP_TIMEOUT) as control:
            taken: dict[str, Any] = control.post(
                "/backup", {} if target is None else {"path": str(target)}
            )
        taken["offline"] = False
    except NotRunningError:
        taken = _offline(directory, config, target)
    if as_json:
        output.print_json(taken)
        return
    where = "offline: no instance runs" if taken["offline"] else "from the running worker"
    output.stderr.print(f"backup written ({where}): {taken['path']}", markup=False)
    output.show(_details(taken))


def _settings_dir(directory: Path, config: Path | None) -> tuple[Any, Path]:
    from khronos_cli import config as config_module
    from khronos_cli.backup.catalog import resolve_dir

    settings = config_module.load(config, state_dir=directory)
    return settings, resolve_dir(directory, settings.backup.dir)


def _offline(directory: Path, config: Path | None, target: Path | None) -> dict[str, Any]:
    import sqlite3

    from khronos_cli import statedir
    from khronos_cli.backup import catalog
    from khronos_cli.backup.copy import take

    settings, backups = _settings_dir(directory, config)
    source = directory / statedir.DB_FILE
    if not source.is_file():
        raise KhronosError(f"no database at {source}: nothing to back up")
    try:
        destination = catalog.target(target or backups, time.time(), create=target is None)
        catalog.sweep(backups)
        copy = take(
            source,
            destination,
            pages_per_step=settings.backup.pages_per_step,
            bandwidth=settings.backup.bandwidth,
        )
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise KhronosError(f"backup failed: {reason}") from None
    return {**copy.to_json(), "scheduled": False, "rotated": [], "offline": True}


def _listing(directory: Path, config: Path | None) -> dict[str, Any]:
    from khronos_cli.control.client import ControlClient

    try:
        with ControlClient(directory, timeout=600) as control:
            data: dict[str, Any] = control.get("/backups")
            return data
    except NotRunningError:
        from khronos_cli.backup.catalog import listing

        _, backups = _settings_dir(directory, config)
        return {"dir": str(backups), "backups": listing(backups)}


def _details(taken: dict[str, Any]) -> Any:
    from khronos_cli.cli.grid import Table, Text

    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows = {
        "path": taken["path"],
        "size": f"{taken['size']:,} bytes ({taken['pages']:,} pages)",
        "sha256": taken["sha256"],
        "schema": f"v{taken['schema_version']}",
        "took": f"{taken['duration_s']:.2f}s",
    }
    for key, value in rows.items():
        table.add_row(key, Text(str(value)))
    return table


def _print_listing(data: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        output.print_json(data)
        return
    from khronos_cli.cli.grid import Table, Text

    table = Table(title=f"backups in {data['dir']}", title_justify="left")
    for column in ("name", "taken (UTC)", "size", "checksum", "schema"):
        table.add_column(column, justify="right" if column == "size" else "left")
    styles = {"ok": "green", "mismatch": "bold red", "missing": "yellow"}
    for item in data["backups"]:
        taken = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item["taken_at"]))
        version = item.get("schema_version")
        table.add_row(
            Text(item["name"]),
            taken,
            f"{item['size']:,}",
            Text(str(item["checksum"]), styles.get(item["checksum"], "")),
            "—" if version is None else f"v{version}",
        )
    if not data["backups"]:
        output.stderr.print(f"no backups in {data['dir']}", markup=False)
        return
    output.show(table)


@output.command
def restore(
    path: Annotated[Path, typer.Argument(help="The backup file to put back as khronos.db.")],
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
) -> None:
    """Put a backup back as the database, with the bot stopped; the replaced file is kept."""
    from khronos_cli.backup.restore import restore as put_back

    done = put_back(resolve_state_dir(state_dir), path.expanduser().absolute())
    if as_json:
        output.print_json(done)
        return
    kept = f"; the replaced database is kept as {done['replaced']}" if done["replaced"] else ""
    output.stderr.print(
        f"restored {done['restored']} (schema v{done['schema_version']}, integrity ok, "
        f"checksum {done['checksum']}) as {done['database']}{kept}",
        markup=False,
    )
