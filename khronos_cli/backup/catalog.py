"""The copies in a backup directory: their names, what each holds, rotation and leftovers.

A scheduled or default copy is named ``khronos-<UTC time>.db`` (``khronos-20261130T120000Z.db``,
``-2`` and on when a second one lands in the same second), with its checksum beside it in
``<name>.sha256``. Listing reads each copy's header for its schema version (SQLite's
``user_version``, bytes 60-63) and hashes it against its checksum file: ``ok``, ``mismatch`` or
``missing``. Rotation keeps the newest ``keep`` copies of that name pattern in the directory
(those an operator took there with ``khronos backup`` count too), and of those none older than
``keep_for`` but the newest. A temporary file left by a copy that was killed is removed by the
next copy into that directory, once the process that wrote it is gone (a copy written to a PATH
of another name leaves its temporary file for you to remove).
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

from khronos_cli.backup.copy import checksum_path, sha256_of
from khronos_cli.control.instance import alive

__all__ = [
    "listing",
    "new_name",
    "read_checksum",
    "resolve_dir",
    "rotate",
    "schema_version",
    "sweep",
    "target",
]

DEFAULT_DIR = "backups"
_NAME = re.compile(r"^khronos-(\d{8}T\d{6}Z)(?:-(\d+))?\.db$")
_TEMPORARY = re.compile(
    r"^\.khronos-\d{8}T\d{6}Z(?:-\d+)?\.db(?:\.sha256)?\.(\d+)\.tmp(?:-journal|-wal|-shm)?$"
)
_HEADER = b"SQLite format 3\x00"


def resolve_dir(state_dir: Path, configured: str) -> Path:
    """``[backup] dir``: empty is ``<state-dir>/backups``; a relative path is in the state dir."""
    path = Path(configured).expanduser() if configured else Path(DEFAULT_DIR)
    return path if path.is_absolute() else state_dir / path


def new_name(directory: Path, now: float) -> str:
    """A free ``khronos-<UTC time>.db`` name in ``directory``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    name, n = f"khronos-{stamp}.db", 1
    while (directory / name).exists() or checksum_path(directory / name).exists():
        n += 1
        name = f"khronos-{stamp}-{n}.db"
    return name


def target(path: Path, now: float, *, create: bool = False) -> Path:
    """Where a copy asked for at ``path`` goes: a new name inside it when it is a directory (with
    ``create``, the backup directory is made 0700 when missing), else that file (which must not
    exist yet, in a directory that does)."""
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_dir():
        return path / new_name(path, now)
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"{path} already exists: give another path")
    return path


def schema_version(path: Path) -> int | None:
    """The schema version in the SQLite header of ``path``; None when it is no SQLite file."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(_HEADER):
        return None
    return int.from_bytes(header[60:64], "big")


def read_checksum(path: Path) -> str | None:
    """The sha256 written beside ``path`` (``sha256sum`` format), or None."""
    try:
        text = checksum_path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    digest = text.split(" ", 1)[0].strip().lower()
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


def _taken_at(path: Path, stat: os.stat_result) -> float:
    match = _NAME.match(path.name)
    if match is None:
        return stat.st_mtime
    return float(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")))


def _copies(directory: Path) -> list[tuple[float, Path, os.stat_result]]:
    """The named copies in ``directory``, newest first."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            if _NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                path = Path(entry.path)
                stat = entry.stat(follow_symlinks=False)
                found.append((_taken_at(path, stat), path, stat))
    return sorted(found, key=lambda item: (item[0], item[2].st_mtime_ns), reverse=True)


def describe(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """What a copy is: name, path, time, size, checksum state and schema version."""
    stat = path.stat()
    expected = read_checksum(path)
    state = "missing"
    if expected is not None:
        state = "unchecked"
        if verify:
            state = "ok" if sha256_of(path)[0] == expected else "mismatch"
    return {
        "name": path.name,
        "path": str(path),
        "taken_at": _taken_at(path, stat),
        "size": stat.st_size,
        "sha256": expected,
        "checksum": state,
        "schema_version": schema_version(path),
    }


def listing(directory: Path, *, verify: bool = True) -> list[dict[str, Any]]:
    """Every copy in ``directory``, newest first (each hashed against its checksum)."""
    return [describe(path, verify=verify) for _, path, _ in _copies(directory)]


def rotate(directory: Path, keep: int, keep_for: float | None, now: float) -> list[str]:
    """Remove the copies past the newest ``keep``, and those older than ``keep_for`` (never the
    newest); the names removed."""
    removed = []
    for index, (taken, path, _) in enumerate(_copies(directory)):
        old = keep_for is not None and now - taken > keep_for
        if index >= keep or (index > 0 and old):
            path.unlink(missing_ok=True)
            checksum_path(path).unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def sweep(directory: Path) -> list[str]:
    """Remove the temporary files of named copies (``.khronos-<time>.db.<pid>.tmp``) whose
    process is gone; the names removed. Nothing else in the directory is touched."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            match = _TEMPORARY.match(entry.name)
            if match and int(match.group(1)) != os.getpid() and not alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(entry.name)
    return removed
