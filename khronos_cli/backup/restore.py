"""Putting a copy back as ``<state-dir>/khronos.db``, with the bot stopped.

Refused (exit 1, nothing changed) while an instance runs on the state directory — a supervisor
holding its lock, a worker answering on its socket, or a run marker whose process lives — and the
lock is held for the whole restore, so no ``khronos run`` starts halfway through. The copy is
checked before anything is replaced: its checksum file when there is one, then a private copy of
it in the state directory (``.khronos.db.<pid>.tmp``) passes ``PRAGMA integrity_check`` and
carries a schema this khronos knows (an older one is migrated at the next start; a newer one is
refused). Only that checked copy is renamed into place. The database it replaces is kept as
``khronos.db.replaced-<UTC time>`` (with its ``-wal``, which may hold its last commits).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from khronos_cli import statedir
from khronos_cli.backup.catalog import read_checksum
from khronos_cli.backup.copy import fsync_dir, sha256_of, temporary_for
from khronos_cli.control import instance
from khronos_cli.errors import KhronosError

__all__ = ["RestoreError", "restore", "running_pid"]

TABLES = ("updates", "outbox", "turns")


class RestoreError(KhronosError):
    """The copy cannot be restored, or not now (exit 1); the database was not touched."""


def running_pid(state_dir: Path) -> int | None:
    """The pid of what runs on ``state_dir`` (supervisor or worker), 0 when only the control
    socket answers, None when nothing does."""
    supervisor = instance.supervisor_pid(state_dir)
    if supervisor is not None:
        return supervisor
    marker = statedir.read_json(state_dir / statedir.RUN_MARKER) or {}
    pid = marker.get("pid")
    if instance.alive(pid):
        assert isinstance(pid, int)
        return pid
    return 0 if instance.answers(state_dir) else None


def _refuse_running(state_dir: Path, pid: int | None) -> None:
    if pid is not None:
        which = f" (pid {pid})" if pid else ""
        raise RestoreError(
            f"khronos runs on {state_dir}{which}: stop it first (`khronos stop`), then restore; "
            "the database was not touched"
        )


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """The state directory's lock, as a supervisor holds it: no instance starts meanwhile."""
    lock = statedir.append_private(state_dir / statedir.LOCK_FILE)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _refuse_running(state_dir, instance.supervisor_pid(state_dir) or 0)
        yield
    finally:
        lock.close()


def restore(state_dir: Path, source: Path, *, now: float | None = None) -> dict[str, Any]:
    """Replace ``<state_dir>/khronos.db`` with the copy at ``source``; what was done."""
    from khronos_cli.bot.schema import SCHEMA_VERSION  # the schema's numbers, no runtime

    now = time.time() if now is None else now
    _refuse_running(state_dir, running_pid(state_dir))
    if not source.is_file():
        raise RestoreError(f"no backup at {source}: give the path of a backup file")
    statedir.prepare(state_dir)
    with _locked(state_dir):
        _refuse_running(state_dir, running_pid(state_dir))
        expected = read_checksum(source)
        digest, size = sha256_of(source)
        if expected is not None and digest != expected:
            raise RestoreError(
                f"{source} does not match its checksum ({source.name}.sha256): the copy is "
                "damaged; the database was not touched"
            )
        database = state_dir / statedir.DB_FILE
        candidate = temporary_for(database)
        try:
            _copy(source, candidate)
            version = _check(candidate, source, SCHEMA_VERSION)
            replaced = _replace(database, candidate, now)
        finally:
            for leftover in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{candidate}{leftover}").unlink()
    return {
        "restored": str(source),
        "database": str(database),
        "replaced": None if replaced is None else str(replaced),
        "size": size,
        "sha256": digest,
        "checksum": "ok" if expected is not None else "missing",
        "schema_version": version,
    }


def _copy(source: Path, candidate: Path) -> None:
    """The file, and its ``-wal`` when one lies beside it (a ``khronos.db.replaced-*`` keeps
    its last commits there): the check folds it in."""
    for suffix in ("", "-wal"):
        origin = Path(f"{source}{suffix}")
        if suffix and not origin.is_file():
            continue
        into = Path(f"{candidate}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            into.unlink()
        fd = statedir.open_private(into, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with origin.open("rb") as reading, os.fdopen(fd, "wb") as writing:
            shutil.copyfileobj(reading, writing, 1 << 20)
            writing.flush()
            os.fsync(writing.fileno())


def _check(candidate: Path, source: Path, latest: int) -> int:
    """``integrity_check`` ok, the bot's tables there, a schema this khronos knows."""
    import sqlite3

    uri = "file:" + urllib.parse.quote(str(candidate.absolute())) + "?mode=rw"
    try:
        db = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            found = [row[0] for row in db.execute("PRAGMA integrity_check(20)").fetchall()]
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if found == ["ok"]:
                db.execute("PRAGMA journal_mode = DELETE")  # a -wal folded in: one file
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise RestoreError(
            f"{source} is not a usable SQLite database ({exc}); the database was not touched"
        ) from None
    if found != ["ok"]:
        lines = [line for row in found for line in str(row).splitlines()]
        lines = [line.strip() for line in lines if line.strip() and not line.startswith("***")]
        more = f"; {len(lines) - 3} more" if len(lines) > 3 else ""
        raise RestoreError(
            f"{source} fails SQLite's integrity check ({'; '.join(lines[:3])}{more}); the "
            "database was not touched"
        )
    missing = [table for table in TABLES if table not in names]
    if version < 1 or missing:
        raise RestoreError(
            f"{source} is not a khronos database (schema v{version}, missing tables: "
            f"{', '.join(missing) or 'none'}); the database was not touched"
        )
    if version > latest:
        raise RestoreError(
            f"{source} has schema v{version}, written by a newer khronos (this one knows "
            f"v{latest}): upgrade khronos first; the database was not touched"
        )
    return version


def _replace(database: Path, candidate: Path, now: float) -> Path | None:
    """The checked copy in place; the database it replaces (and its -wal) kept aside."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    replaced: Path | None = database.with_name(f"{database.name}.replaced-{stamp}")
    assert replaced is not None
    n = 1
    while replaced.exists():
        n += 1
        replaced = database.with_name(f"{database.name}.replaced-{stamp}-{n}")
    if database.exists():
        os.link(database, replaced)  # the old file stays whole under its new name
        wal = Path(f"{database}-wal")
        if wal.exists():
            os.replace(wal, f"{replaced}-wal")
    else:
        replaced = None
    Path(f"{database}-shm").unlink(missing_ok=True)
    os.replace(candidate, database)
    fsync_dir(database.parent)
    return replaced
