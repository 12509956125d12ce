"""The backup room on real SQLite files: names, rotation by count and age, leftovers of a killed
copy, and a copy from a newer khronos refused by restore."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from khronos_cli.backup import catalog
from khronos_cli.backup.copy import take
from khronos_cli.backup.restore import RestoreError, restore
from tests.support import khronos_database

DAY = 86400.0


def _copy_at(directory: Path, source: Path, at: float) -> Path:
    return Path(take(source, catalog.target(directory, at, create=True)).path)


def test_rotation_keeps_the_newest_by_count_and_age(tmp_path: Path) -> None:
    """``keep`` bounds the count; ``keep_for`` removes older copies, never the newest one."""
    source = tmp_path / "khronos.db"
    khronos_database(source)
    backups = tmp_path / "backups"
    now = time.time()
    made = [_copy_at(backups, source, now - days * DAY) for days in (9, 5, 3, 1, 0)]
    assert catalog.rotate(backups, 4, None, now) == [made[0].name]
    assert catalog.rotate(backups, 4, 2 * DAY, now) == [made[2].name, made[1].name]
    assert [item["name"] for item in catalog.listing(backups)] == [made[4].name, made[3].name]
    assert not list(backups.glob(f"{made[0].name}*"))
    assert catalog.rotate(backups, 4, 1.0, now + 3 * DAY) == [made[3].name]  # never the newest


def test_two_copies_in_one_second_get_two_names(tmp_path: Path) -> None:
    """A second copy in the same second is ``-2``, not an overwrite."""
    source = tmp_path / "khronos.db"
    khronos_database(source)
    now = time.time()
    first, second = (_copy_at(tmp_path / "b", source, now) for _ in range(2))
    assert second.name == first.name.replace(".db", "-2.db")
    assert [i["checksum"] for i in catalog.listing(tmp_path / "b")] == ["ok", "ok"]


def test_a_dead_copys_temporary_file_is_swept(tmp_path: Path) -> None:
    """A copy's temporary file whose writer is gone is removed; a live writer's, and a file of
    another name, are left alone."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = tmp_path / f".khronos-20261130T120000Z.db.{gone.stdout.strip()}.tmp"
    live = tmp_path / f".khronos-20261130T120001Z.db.{os.getpid()}.tmp"
    dead.write_bytes(b"partial")
    other = tmp_path / f".notes.{gone.stdout.strip()}.tmp"
    other.write_text("not ours")
    live.write_bytes(b"being written")
    assert catalog.sweep(tmp_path) == [dead.name]
    assert live.exists() and other.exists() and catalog.listing(tmp_path) == []


def test_restore_refuses_a_copy_from_a_newer_khronos(tmp_path: Path) -> None:
    """A copy whose schema is newer than this khronos knows is refused; nothing changes."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    khronos_database(state / "khronos.db")
    before = (state / "khronos.db").read_bytes()
    newer = tmp_path / "newer.db"
    khronos_database(newer)
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(RestoreError, match="schema v99, written by a newer khronos"):
        restore(state, newer)
    assert (state / "khronos.db").read_bytes() == before
    assert sorted(p.name for p in state.iterdir()) == ["khronos.db", "khronos.lock"]


def test_restore_folds_in_the_wal_beside_a_copy(tmp_path: Path) -> None:
    """A copy with its ``-wal`` beside it (a database kept by an earlier restore, or one whose
    bot was killed) is restored with the commits that were only in the WAL."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    khronos_database(state / "khronos.db")
    live = tmp_path / "live.db"
    khronos_database(live)
    db = sqlite3.connect(live, isolation_level=None)
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("INSERT INTO turns (chat_id, role, text, created_at) VALUES (1, 'user', 'wal', 0)")
    kept = tmp_path / "kept.db"
    shutil.copyfile(live, kept)  # as a kill -9 leaves them: the commit is in the -wal only
    shutil.copyfile(f"{live}-wal", f"{kept}-wal")
    db.close()
    restore(state, kept)
    assert not Path(f"{state / 'khronos.db'}-wal").exists()
    with sqlite3.connect(state / "khronos.db") as restored:
        assert restored.execute("SELECT text FROM turns").fetchall() == [("wal",)]
    restored.close()
