"""Taking a copy of ``khronos.db`` that is consistent while the bot writes to it.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the file page by page from a
connection of its own, never the store's: the store's one thread is never asked to do anything.
Before the first step that connection opens a read transaction and holds it to the end, so in
WAL mode every step reads the same snapshot (the moment the copy began) while the bot's writer
goes on committing to the WAL; without that hold, each step would take a fresh read lock and a
commit between two steps would restart the copy from page one, for ever on a busy bot. Nothing
waits on the copy but the WAL's checkpoints, which cannot pass a reader and resume when it ends.

The copy is written under a temporary name in the target's directory (``.<name>.<pid>.tmp``,
0600), switched to a plain rollback-journal file (one self-contained file any ``sqlite3`` opens
read-only), fsync'ed, hashed (sha256), renamed into place and the directory fsync'ed; only then is
the checksum written beside it (``<name>.sha256``, ``sha256sum -c`` format). A copy killed at any
point leaves at most a temporary file (swept by the next copy), never a partial file under a
backup's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Aborted", "Copy", "checksum_path", "fsync_dir", "sha256_of", "take", "temporary_for"]

CHUNK = 1 << 20
FLUSH_EVERY = 4 << 20  # bytes of copy written out at a time
BUSY_TIMEOUT = 5.0


class Aborted(Exception):
    """The copy was asked to stop (the worker is stopping)."""


@dataclass(frozen=True)
class Copy:
    """One finished copy."""

    path: str
    name: str
    size: int
    sha256: str
    schema_version: int
    pages: int
    started_at: float
    finished_at: float

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "duration_s": round(self.duration, 3)}


def temporary_for(target: Path) -> Path:
    """The name a copy is written under before it is renamed to ``target``."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def checksum_path(path: Path) -> Path:
    """Where the sha256 of the backup at ``path`` is written."""
    return path.with_name(path.name + ".sha256")


def take(
    source: Path,
    target: Path,
    *,
    pages_per_step: int = 1024,
    bandwidth: int | None = None,
    abort: threading.Event | None = None,
) -> Copy:
    """Copy the SQLite file ``source`` to ``target`` (which must not exist) as described above;
    ``bandwidth`` in MiB/s. Raises OSError, ``sqlite3.Error``, FileExistsError or Aborted."""
    import sqlite3

    if target.exists() or target.is_symlink():
        raise FileExistsError(f"{target} already exists: give another path")
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source}")
    started = time.time()
    temporary = temporary_for(target)
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    os.close(fd)
    try:
        uri = "file:" + urllib.parse.quote(str(source.absolute())) + "?mode=rw"
        reader = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            reader.execute("BEGIN")  # the snapshot every step reads, held to the end
            schema = int(reader.execute("PRAGMA user_version").fetchone()[0])
            page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
            writer = sqlite3.connect(temporary, isolation_level=None)
            flushing = os.open(temporary, os.O_RDONLY | os.O_CLOEXEC)
            try:
                writer.execute("PRAGMA journal_mode = OFF")  # a new file: nothing to roll back
                writer.execute("PRAGMA synchronous = OFF")  # flushed by _Pace as it goes
                progress = _Pace(bandwidth, abort, page_size=page_size, fd=flushing)
                reader.backup(writer, pages=pages_per_step, progress=progress)
                writer.execute("PRAGMA journal_mode = DELETE")  # one file, no -wal to carry
                pages = int(writer.execute("PRAGMA page_count").fetchone()[0])
            finally:
                writer.close()
                os.close(flushing)
        finally:
            reader.close()
        for leftover in ("-journal", "-wal", "-shm"):
            Path(f"{temporary}{leftover}").unlink(missing_ok=True)
        digest, size = sha256_of(temporary, sync=True, pace=_Pace(bandwidth, abort).step)
        os.replace(temporary, target)
    except BaseException:
        for leftover in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{temporary}{leftover}").unlink()
        raise
    fsync_dir(target.parent)
    _write_checksum(target, digest)
    return Copy(str(target), target.name, size, digest, schema, pages, started, time.time())


class _Pace:
    """Paces a pass over the copy: stops it when asked, writes what it copied out to the disk
    every :data:`FLUSH_EVERY` bytes when given the file (one big flush at the end would hold the
    bot's own commits, each an fsync, behind it), and keeps it under ``bandwidth`` MiB/s. As the
    backup's progress callback it is called with SQLite's page counts."""

    def __init__(
        self,
        bandwidth: int | None,
        abort: threading.Event | None,
        *,
        page_size: int = 0,
        fd: int | None = None,
    ) -> None:
        self.page_size = page_size
        self.rate = None if bandwidth is None else bandwidth * 1024 * 1024
        self.abort = abort or threading.Event()
        self.fd = fd
        self.flushed = 0
        self.began = time.monotonic()

    def __call__(self, status: int, remaining: int, total: int) -> None:
        self.step((total - remaining) * self.page_size)

    def step(self, done: int) -> None:
        """``done`` bytes of the pass are behind us."""
        if self.abort.is_set():
            raise Aborted("the backup was stopped")
        if self.fd is not None and done - self.flushed >= FLUSH_EVERY:
            os.fdatasync(self.fd)
            self.flushed = done
        if self.rate is None:
            return
        ahead = done / self.rate - (time.monotonic() - self.began)
        if ahead > 0 and self.abort.wait(ahead):
            raise Aborted("the backup was stopped")


def sha256_of(
    path: Path, *, sync: bool = False, pace: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """The file's sha256 (hex) and size; with ``sync``, fsync'ed too; ``pace`` is told the
    bytes read so far after each chunk."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if pace is not None:
                pace(size)
        if sync:
            os.fsync(file.fileno())
    return digest.hexdigest(), size


def _write_checksum(target: Path, digest: str) -> None:
    path = checksum_path(target)
    temporary = temporary_for(path)
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(f"{digest}  {target.name}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
