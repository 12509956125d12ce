"""The store's SQLite engine: one thread, whole transactions, group commit, migrations.

Threading: all SQLite work runs on **one dedicated thread** (stdlib ``sqlite3``, no extra
dependency), and each public method is **one whole transaction** handed to that thread, so the
event loop never blocks and a cancelled caller can never leave a transaction half open: the
transaction still commits or rolls back as a unit. A caller cancelled while waiting may not know
whether it committed; ``journal()`` and ``record_reply()`` are idempotent, so retrying is safe.

Durability: WAL mode with ``synchronous=FULL`` by default. WAL+NORMAL already survives a crash of
the *process* (``kill -9``): a committed transaction sits in the WAL file in the OS page cache.
Only power loss or a kernel crash can roll back the last NORMAL commits, and those commits are
exactly the ones that let the poller tell Telegram to forget an update; FULL fsyncs the WAL on
each commit so they survive that too. It costs one fsync per commit, a few per message, far
below what Telegram's 30 msg/s cap lets through. Pass ``synchronous="NORMAL"`` to trade that.

Schema changes are numbered migrations recorded in ``PRAGMA user_version``; a file written by a
newer khronos is refused, never downgraded. The file is created 0600 (SQLite gives its -wal and
-shm files the same mode). Every ``sqlite3`` error is translated here, at this one boundary,
into :class:`~khronos_cli.errors.StoreError` raised ``from`` the original. Before each operation
(not open/close, which shutdown must always be able to run) the engine asks an optional
:class:`FaultInjector` about the ``database`` dependency, so ``khronos outage start database``
fails, slows or hangs real calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from khronos_cli.errors import InjectedFaultError, StoreError
from khronos_cli.upstream.faults import FaultInjector

__all__ = ["DEPENDENCY", "Database", "Migrations", "Work", "compact", "describe"]

DEPENDENCY = "database"

_T = TypeVar("_T")
Work = Callable[[sqlite3.Connection], _T]
Migrations = Sequence[Sequence[str]]  # migration n (0-based) takes user_version n to n + 1


class Database:
    """One SQLite file on its own thread. Build it with ``await Database.open(...)``."""

    def __init__(
        self,
        path: str,
        executor: ThreadPoolExecutor,
        faults: FaultInjector | None,
        busy_timeout: float,
        migrations: Migrations,
    ) -> None:
        self.path = path
        self._executor = executor
        self._faults = faults
        self._busy_timeout = busy_timeout
        self._migrations = migrations
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._pending: list[tuple[str, Work[Any], asyncio.Future[Any]]] = []
        self._flushing: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        migrations: Migrations,
        *,
        faults: FaultInjector | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        busy_timeout: float = 5.0,
        read_only: bool = False,
    ) -> Database:
        """Open (creating and migrating when needed) the file at ``path``; raises StoreError.

        ``read_only`` opens through SQLite's own ``mode=ro``: reads work, writes raise StoreError.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous={synchronous!r}: expected 'NORMAL' or 'FULL'")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="khronos-store")
        database = cls(os.fspath(path), executor, faults, busy_timeout, migrations)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, database._connect, synchronous, read_only)
        except BaseException as exc:
            executor.submit(database._disconnect)  # when cancelled, the connect may still finish
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreError(database.path, "open", describe(exc)) from exc
            raise
        return database

    async def aclose(self) -> None:
        """Finish the queued work, checkpoint and close the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        while self._flushing is not None:  # writes already accepted are committed first
            await asyncio.shield(self._flushing)
        try:
            await loop.run_in_executor(self._executor, self._disconnect)
        except sqlite3.Error as exc:
            raise StoreError(self.path, "close", describe(exc)) from exc
        finally:
            self._executor.shutdown(wait=False)

    async def call(
        self, operation: str, work: Work[_T], *, write: bool = False, snapshot: bool = False
    ) -> _T:
        """``work(connection)`` on the store thread as one whole transaction (``write``: in the
        next group commit; ``snapshot``: a read transaction), SQLite errors as StoreError."""
        if self._closed:
            raise StoreError(self.path, operation, "the store is closed")
        if self._faults is not None:
            try:
                await self._faults.before_call(DEPENDENCY, timeout=self._busy_timeout)
            except InjectedFaultError as exc:
                raise StoreError(self.path, operation, str(exc)) from exc
        loop = asyncio.get_running_loop()
        if write:
            return await self._write(loop, operation, work)
        begin = "BEGIN" if snapshot else None
        try:
            return await loop.run_in_executor(self._executor, self._on_thread, begin, work)
        except sqlite3.Error as exc:
            raise StoreError(self.path, operation, describe(exc)) from exc

    # Group commit: writes that arrive while a transaction is committing wait and then share
    # the next one (each in its own SAVEPOINT, so one failing write never undoes another), so
    # under load one fsync serves many updates. A caller's future resolves only after the
    # COMMIT that holds its write, so "committed" still means on disk.

    async def _write(self, loop: asyncio.AbstractEventLoop, operation: str, work: Work[_T]) -> _T:
        future: asyncio.Future[_T] = loop.create_future()
        self._pending.append((operation, work, future))
        if self._flushing is None:
            self._flushing = loop.create_future()
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        works = [work for _, work, _ in batch]
        running = loop.run_in_executor(self._executor, self._on_thread_batch, works)

        def finished(done: asyncio.Future[list[tuple[bool, Any]]]) -> None:
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            results = done.result() if error is None else [(False, error)] * len(batch)
            for (operation, _, future), (ok, value) in zip(batch, results, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                elif isinstance(value, sqlite3.Error):
                    failure = StoreError(self.path, operation, describe(value))
                    failure.__cause__ = value
                    future.set_exception(failure)
                else:
                    future.set_exception(value)
            if self._pending:
                self._flush(loop)
            else:
                flushing, self._flushing = self._flushing, None
                if flushing is not None and not flushing.done():
                    flushing.set_result(None)

        running.add_done_callback(finished)

    def _on_thread_batch(self, works: list[Work[Any]]) -> list[tuple[bool, Any]]:
        if self._db is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return _run_batch(self._db, works)

    def _on_thread(self, begin: str | None, work: Work[_T]) -> _T:
        if self._db is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return _run(self._db, begin, work)

    def _connect(self, synchronous: str, read_only: bool) -> None:
        path = Path(self.path)
        if not read_only:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        uri = "file:" + urllib.parse.quote(str(path.absolute())) + ("?mode=ro" if read_only else "")
        db = sqlite3.connect(uri, uri=True, timeout=self._busy_timeout, isolation_level=None)
        try:
            if not read_only:
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes on an empty file
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(self.path, "open", f"cannot use WAL (journal_mode={mode})")
            db.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate(db, read_only)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _migrate(self, db: sqlite3.Connection, read_only: bool) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        latest = len(self._migrations)
        if version > latest:
            raise StoreError(
                self.path,
                "open",
                f"schema v{version} was written by a newer khronos (this one knows "
                f"v{latest}); upgrade khronos or use another --state-dir",
            )
        if version < latest and read_only:
            raise StoreError(
                self.path, "open", f"schema v{version} needs migrating and the file is read-only"
            )
        for number in range(version, latest):

            def migrate(db: sqlite3.Connection, number: int = number) -> None:
                for statement in self._migrations[number]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

            _run(db, "BEGIN IMMEDIATE", migrate)

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA incremental_vacuum")
            db.close()


def _run(db: sqlite3.Connection, begin: str | None, work: Work[_T]) -> _T:
    """Run ``work`` (on the store thread), inside one transaction when ``begin`` is given."""
    if begin is None:
        return work(db)
    with _transaction(db, begin):
        return work(db)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str) -> Iterator[None]:
    """``begin`` … COMMIT, or ROLLBACK when the body raises (whatever it raises)."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _run_batch(db: sqlite3.Connection, works: list[Work[Any]]) -> list[tuple[bool, Any]]:
    """Run writes in one transaction, each in a savepoint; (ok, result or error) for each."""
    if len(works) == 1:
        try:
            return [(True, _run(db, "BEGIN IMMEDIATE", works[0]))]
        except Exception as exc:
            return [(False, exc)]
    results: list[tuple[bool, Any]] = []
    with _transaction(db, "BEGIN IMMEDIATE"):
        for work in works:
            db.execute("SAVEPOINT write")
            try:
                value = work(db)
            except Exception as exc:
                db.execute("ROLLBACK TO write")
                db.execute("RELEASE write")
                results.append((False, exc))
            else:
                db.execute("RELEASE write")
                results.append((True, value))
    return results


def compact(db: sqlite3.Connection) -> None:
    """Hand freed pages back (``auto_vacuum = INCREMENTAL``) and truncate the WAL, so the files
    shrink after a prune instead of only never growing again."""
    db.execute("PRAGMA incremental_vacuum").fetchall()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def describe(exc: BaseException) -> str:
    """An SQLite error as one line, with its SQLite name (SQLITE_FULL, ...) when known."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc) or type(exc).__name__
