"""The SQLite store: the durable half of "nothing is lost".

An update's life (DESIGN.md, "How nothing is lost")::

    journal() ──> journaled ──record_reply()──> answered + outbox rows ──mark_sent()──> done
                     │                             pending outbox ──mark_failed(final)──> done
                     └──────────skip()──────────> done (nothing to answer: a service message)

Every arrow is one committed SQLite transaction, so a crash at any point leaves the update at
Telegram, in the journal (``pending_updates()``) or in the outbox (``pending_outbox()``), and the
next start resumes from there. ``journal()`` is the dedup: it returns False for an update id it
has seen in any state, so a redelivered update is never answered twice. Done ids are kept until
``prune()`` drops them (keep them longer than the 24 h Telegram keeps updates).

A reply longer than one Telegram message is several outbox rows, its *parts* (``part`` 0, 1, ...),
committed together; its update is done once every part is sent (or given up on). A group that
Telegram upgraded to a supergroup moves, history and pending messages, with ``migrate_chat()``.

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
-shm files the same mode). Every ``sqlite3`` error is translated here, at this one boundary, into
:class:`StoreError` raised ``from`` the original. Before each operation (not open/close, which
shutdown must always be able to run) the store asks an optional :class:`FaultInjector` about the
``database`` dependency, so ``khronos outage start database`` fails, slows or hangs real calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from khronos_cli.errors import InjectedFaultError, StoreError
from khronos_cli.upstream.faults import FaultInjector

__all__ = [
    "DEPENDENCY",
    "RETENTION",
    "SCHEMA_VERSION",
    "OutboxMessage",
    "PendingUpdate",
    "Store",
    "StoreError",
    "Turn",
]

DEPENDENCY = "database"
RETENTION = 48 * 3600.0  # keep done update ids twice as long as Telegram keeps updates

_T = TypeVar("_T")
_Work = Callable[[sqlite3.Connection], _T]

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # v1: the journal, the outbox and the conversation turns
        """CREATE TABLE updates (
            update_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, payload TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('journaled', 'answered', 'done')),
            journaled_at REAL NOT NULL, answered_at REAL, done_at REAL)""",
        "CREATE INDEX updates_by_state ON updates (state, update_id)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER NOT NULL, text TEXT NOT NULL,
            reply_to_message_id INTEGER, update_id INTEGER UNIQUE, source TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, telegram_message_id INTEGER,
            created_at REAL NOT NULL, finished_at REAL)""",
        "CREATE INDEX outbox_by_state ON outbox (state, id)",
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')), text TEXT NOT NULL,
            update_id INTEGER, created_at REAL NOT NULL)""",
        "CREATE INDEX turns_by_chat ON turns (chat_id, id)",
    ),
    (  # v2: a reply may be several messages (parts); turns pruned by age
        """CREATE TABLE outbox_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT, chat_id INTEGER NOT NULL, text TEXT NOT NULL,
            reply_to_message_id INTEGER, update_id INTEGER, part INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, telegram_message_id INTEGER,
            created_at REAL NOT NULL, finished_at REAL, UNIQUE (update_id, part))""",
        """INSERT INTO outbox_v2 (id, chat_id, text, reply_to_message_id, update_id, source,
            state, attempts, last_error, telegram_message_id, created_at, finished_at)
            SELECT id, chat_id, text, reply_to_message_id, update_id, source, state, attempts,
            last_error, telegram_message_id, created_at, finished_at FROM outbox""",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_v2 RENAME TO outbox",
        "CREATE INDEX outbox_by_state ON outbox (state, id)",
        "CREATE INDEX turns_by_time ON turns (created_at)",
    ),
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (chat_id, text, reply_to_message_id, update_id, part, source, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_OUTBOX_COLUMNS = (
    "id, chat_id, text, reply_to_message_id, update_id, source, attempts, last_error, created_at,"
    " part"
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class PendingUpdate:
    """A journaled update that has no committed answer yet."""

    update_id: int
    chat_id: int
    payload: dict[str, Any]
    journaled_at: float


@dataclass(frozen=True)
class OutboxMessage:
    """A message waiting to be sent to Telegram (a reply, or one queued by ``POST /messages``)."""

    id: int
    chat_id: int
    text: str
    reply_to_message_id: int | None
    update_id: int | None
    source: str
    attempts: int
    last_error: str | None
    created_at: float
    part: int = 0  # a long reply's parts go out in order; only part 0 replies to the user


@dataclass(frozen=True)
class Turn:
    """One line of a conversation, for the LLM prompt."""

    role: Literal["user", "assistant"]
    text: str
    created_at: float


class Store:
    """The bot's SQLite file. Build it with ``await Store.open(path)``; end with ``aclose()``."""

    def __init__(
        self,
        path: str,
        executor: ThreadPoolExecutor,
        faults: FaultInjector | None,
        clock: Callable[[], float],
        busy_timeout: float,
    ) -> None:
        self.path = path
        self._executor = executor
        self._faults = faults
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._pending: list[tuple[str, _Work[Any], asyncio.Future[Any]]] = []
        self._flushing: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        faults: FaultInjector | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        busy_timeout: float = 5.0,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> Store:
        """Open (creating and migrating when needed) the store at ``path``; raises StoreError.

        ``read_only`` opens through SQLite's own ``mode=ro``: reads work, writes raise StoreError.
        ``clock`` gives the unix timestamps stored with rows (and that ``prune`` compares).
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous={synchronous!r}: expected 'NORMAL' or 'FULL'")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="khronos-store")
        store = cls(os.fspath(path), executor, faults, clock, busy_timeout)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, store._connect, synchronous, read_only)
        except BaseException as exc:
            executor.submit(store._disconnect)  # when cancelled, the connect may still finish
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreError(store.path, "open", _describe(exc)) from exc
            raise
        return store

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
            raise StoreError(self.path, "close", _describe(exc)) from exc
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- journal --------------------------------------------------------------------------------

    async def journal(self, update_id: int, chat_id: int, payload: dict[str, Any]) -> bool:
        """Durably record a fetched update; False when that id was seen before (the dedup)."""
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO updates (update_id, chat_id, payload, state, journaled_at)"
                " VALUES (?, ?, ?, 'journaled', ?) ON CONFLICT (update_id) DO NOTHING",
                (update_id, chat_id, text, self._clock()),
            )
            return cursor.rowcount == 1

        return await self._call("journal", work, write=True)

    async def pending_updates(self, limit: int | None = None) -> list[PendingUpdate]:
        """Journaled updates with no committed answer yet, oldest first."""

        def work(db: sqlite3.Connection) -> list[PendingUpdate]:
            rows = db.execute(
                "SELECT update_id, chat_id, payload, journaled_at FROM updates"
                " WHERE state = 'journaled' ORDER BY update_id LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
            return [PendingUpdate(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

        return await self._call("pending_updates", work)

    # -- answers and the outbox -----------------------------------------------------------------

    async def record_reply(
        self,
        update_id: int,
        chat_id: int,
        text: str | Sequence[str],
        reply_to_message_id: int | None = None,
        *,
        user_text: str | None = None,
        remember: bool = True,
    ) -> list[OutboxMessage]:
        """In one transaction: mark the update answered, append the user's message and the reply
        to the chat's history (unless ``remember`` is False: commands are not conversation), and
        queue the reply in the outbox: ``text``, or its parts in order (only the first replies to
        ``reply_to_message_id``). Returns the outbox rows to send.

        The user's turn is ``user_text`` (e.g. a voice transcription) or else the text or caption
        of the journaled message; the history keeps the reply whole. Calling it again for an
        update already answered changes nothing and returns its rows still pending; an update
        never journaled raises StoreError.
        """
        parts = [text] if isinstance(text, str) else list(text)
        if not parts:
            raise ValueError("a reply needs at least one part (use skip() to answer nothing)")

        def work(db: sqlite3.Connection) -> list[OutboxMessage]:
            row = db.execute(
                "SELECT payload, state FROM updates WHERE update_id = ?", (update_id,)
            ).fetchone()
            if row is None:
                raise StoreError(self.path, "record_reply", f"update {update_id} is not journaled")
            if row[1] != "journaled":
                return _outbox_rows(db, "update_id = ? AND state = 'pending'", (update_id,))
            now = self._clock()
            db.execute(
                "UPDATE updates SET state = 'answered', answered_at = ? WHERE update_id = ?",
                (now, update_id),
            )
            said = user_text if user_text is not None else _message_text(json.loads(row[0]))
            turns = [("user", said)] if said else []
            turns.append(("assistant", "\n\n".join(parts)))
            if not remember:
                turns = []
            db.executemany(
                "INSERT INTO turns (chat_id, role, text, update_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(chat_id, role, said_text, update_id, now) for role, said_text in turns],
            )
            messages = []
            for number, part in enumerate(parts):
                reply_to = reply_to_message_id if number == 0 else None
                values = (chat_id, part, reply_to, update_id, number, "reply", now)
                outbox_id = int(db.execute(_INSERT_OUTBOX, values).lastrowid or 0)
                messages.append(
                    OutboxMessage(
                        outbox_id, chat_id, part, reply_to, update_id, "reply", 0, None, now, number
                    )
                )
            return messages

        return await self._call("record_reply", work, write=True)

    async def skip(self, update_id: int) -> bool:
        """A journaled update that needs no answer (a service message, an edit, a group message
        not addressed to the bot): done, with nothing to send. False if it was not journaled."""

        def work(db: sqlite3.Connection) -> bool:
            now = self._clock()
            cursor = db.execute(
                "UPDATE updates SET state = 'done', answered_at = ?, done_at = ?"
                " WHERE update_id = ? AND state = 'journaled'",
                (now, now, update_id),
            )
            return cursor.rowcount == 1

        return await self._call("skip", work, write=True)

    async def migrate_chat(self, chat_id: int, new_chat_id: int) -> dict[str, int]:
        """The group ``chat_id`` became the supergroup ``new_chat_id``: move its history, its
        pending messages and its unanswered updates there. Idempotent; returns the rows moved."""

        def work(db: sqlite3.Connection) -> dict[str, int]:
            moved = {}
            for table, where in (
                ("turns", ""),
                ("outbox", " AND state = 'pending'"),
                ("updates", " AND state != 'done'"),
            ):
                moved[table] = db.execute(
                    f"UPDATE {table} SET chat_id = ? WHERE chat_id = ?{where}",
                    (new_chat_id, chat_id),
                ).rowcount
            return moved

        return await self._call("migrate_chat", work, write=True)

    async def enqueue_message(self, chat_id: int, text: str, *, source: str = "api") -> int:
        """Queue a message that answers no update (``POST /messages``); returns the outbox id."""

        def work(db: sqlite3.Connection) -> int:
            values = (chat_id, text, None, None, 0, source, self._clock())
            return int(db.execute(_INSERT_OUTBOX, values).lastrowid or 0)

        return await self._call("enqueue_message", work, write=True)

    async def pending_outbox(self, limit: int | None = None) -> list[OutboxMessage]:
        """Messages not yet accepted by Telegram (and not given up on), oldest first."""

        def work(db: sqlite3.Connection) -> list[OutboxMessage]:
            return _outbox_rows(db, "state = 'pending'", (), -1 if limit is None else limit)

        return await self._call("pending_outbox", work)

    async def mark_sent(self, outbox_id: int, telegram_message_id: int | None) -> bool:
        """Telegram accepted the message: mark it sent and its update done. False if it already
        was; an unknown outbox id raises StoreError."""

        def work(db: sqlite3.Connection) -> bool:
            row = self._outbox_row(db, outbox_id, "mark_sent")
            if row[1] == "sent":
                return False
            now = self._clock()
            db.execute(
                "UPDATE outbox SET state = 'sent', telegram_message_id = ?, finished_at = ?"
                " WHERE id = ?",
                (telegram_message_id, now, outbox_id),
            )
            self._finish_update(db, row[0], now)
            return True

        return await self._call("mark_sent", work, write=True)

    async def mark_failed(self, outbox_id: int, error: str, *, final: bool = False) -> int:
        """A send failed: count the attempt and keep the error; returns the attempt count.

        With ``final`` (e.g. Telegram answered 403: the user blocked the bot) the message is given
        up on, with the parts of the same reply still after it (half an answer helps nobody): they
        leave the pending outbox and their update counts as done.
        """

        def work(db: sqlite3.Connection) -> int:
            row = self._outbox_row(db, outbox_id, "mark_failed")
            if row[1] != "pending":
                return int(row[2])
            now = self._clock()
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?,"
                " state = ?, finished_at = ? WHERE id = ?",
                (error, "failed" if final else "pending", now if final else None, outbox_id),
            )
            if final and row[0] is not None:
                db.execute(
                    "UPDATE outbox SET state = 'failed', last_error = ?, finished_at = ?"
                    " WHERE update_id = ? AND state = 'pending' AND id > ?",
                    ("an earlier part was given up on", now, row[0], outbox_id),
                )
            if final:
                self._finish_update(db, row[0], now)
            return int(row[2]) + 1

        return await self._call("mark_failed", work, write=True)

    # -- conversations --------------------------------------------------------------------------

    async def history(self, chat_id: int, limit: int = 20) -> list[Turn]:
        """The chat's ``limit`` most recent turns, oldest first."""

        def work(db: sqlite3.Connection) -> list[Turn]:
            rows = db.execute(
                "SELECT role, text, created_at FROM (SELECT id, role, text, created_at FROM turns"
                " WHERE chat_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                (chat_id, limit),
            ).fetchall()
            return [Turn(*row) for row in rows]

        return await self._call("history", work)

    async def reset(self, chat_id: int) -> int:
        """Forget the chat's conversation (the ``/reset`` command); returns the turns removed."""

        def work(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM turns WHERE chat_id = ?", (chat_id,)).rowcount

        return await self._call("reset", work, write=True)

    # -- housekeeping ---------------------------------------------------------------------------

    async def prune(
        self,
        older_than_seconds: float = RETENTION,
        *,
        outbox_older_than: float | None = None,
        turns_older_than: float | None = None,
        keep_turns: int | None = None,
    ) -> dict[str, int]:
        """Drop done updates older than ``older_than_seconds``, finished outbox rows older than
        ``outbox_older_than`` (default: the same age), turns older than ``turns_older_than`` and,
        with ``keep_turns``, all but each chat's last turns; then give the freed pages back to
        the file system. Returns the rows removed."""
        ages = (older_than_seconds, outbox_older_than, turns_older_than)
        if any(age is not None and not age >= 0 for age in ages):
            raise ValueError(f"ages {ages!r}: expected seconds >= 0")
        outbox_age = older_than_seconds if outbox_older_than is None else outbox_older_than

        def work(db: sqlite3.Connection) -> dict[str, int]:
            now = self._clock()
            removed = {
                "updates": db.execute(
                    "DELETE FROM updates WHERE state = 'done' AND done_at < ?",
                    (now - older_than_seconds,),
                ).rowcount,
                "outbox": db.execute(
                    "DELETE FROM outbox WHERE state != 'pending' AND finished_at < ?",
                    (now - outbox_age,),
                ).rowcount,
                "turns": 0,
            }
            if turns_older_than is not None:
                removed["turns"] += db.execute(
                    "DELETE FROM turns WHERE created_at < ?", (now - turns_older_than,)
                ).rowcount
            if keep_turns is not None:
                removed["turns"] += db.execute(
                    "DELETE FROM turns WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER()"
                    " OVER (PARTITION BY chat_id ORDER BY id DESC) AS n FROM turns) WHERE n > ?)",
                    (keep_turns,),
                ).rowcount
            return removed

        removed = await self._call("prune", work, write=True)
        await self._call("compact", _compact)
        return removed

    async def ping(self) -> None:
        """The ``database`` health check: one trivial read through the same thread and faults."""
        await self._call("ping", lambda db: db.execute("SELECT 1").fetchone())

    async def counts(self) -> dict[str, int]:
        """Row counts for status and shutdown reports, from one consistent snapshot."""

        def work(db: sqlite3.Connection) -> dict[str, int]:
            result = dict.fromkeys(
                ("journaled", "answered", "done", "outbox", "sent", "failed", "turns", "chats"), 0
            )
            for state, n in db.execute("SELECT state, count(*) FROM updates GROUP BY state"):
                result[state] = n
            for state, n in db.execute("SELECT state, count(*) FROM outbox GROUP BY state"):
                result["outbox" if state == "pending" else state] = n
            turns, chats = db.execute(
                "SELECT count(*), count(DISTINCT chat_id) FROM turns"
            ).fetchone()
            result["turns"], result["chats"] = turns, chats
            return result

        return await self._call("counts", work, snapshot=True)

    # -- the boundary ---------------------------------------------------------------------------

    async def _call(
        self, operation: str, work: _Work[_T], *, write: bool = False, snapshot: bool = False
    ) -> _T:
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
            raise StoreError(self.path, operation, _describe(exc)) from exc

    # Group commit: writes that arrive while a transaction is committing wait and then share
    # the next one (each in its own SAVEPOINT, so one failing write never undoes another), so
    # under load one fsync serves many updates. A caller's future resolves only after the
    # COMMIT that holds its write, so "committed" still means on disk.

    async def _write(self, loop: asyncio.AbstractEventLoop, operation: str, work: _Work[_T]) -> _T:
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
                    failure = StoreError(self.path, operation, _describe(value))
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

    def _on_thread_batch(self, works: list[_Work[Any]]) -> list[tuple[bool, Any]]:
        if self._db is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return _run_batch(self._db, works)

    def _on_thread(self, begin: str | None, work: _Work[_T]) -> _T:
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
        if version > SCHEMA_VERSION:
            raise StoreError(
                self.path,
                "open",
                f"schema v{version} was written by a newer khronos (this one knows "
                f"v{SCHEMA_VERSION}); upgrade khronos or use another --state-dir",
            )
        if version < SCHEMA_VERSION and read_only:
            raise StoreError(
                self.path, "open", f"schema v{version} needs migrating and the file is read-only"
            )
        for number in range(version, SCHEMA_VERSION):

            def migrate(db: sqlite3.Connection, number: int = number) -> None:
                for statement in _MIGRATIONS[number]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

            _run(db, "BEGIN IMMEDIATE", migrate)

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA incremental_vacuum")
            db.close()

    def _outbox_row(self, db: sqlite3.Connection, outbox_id: int, operation: str) -> Any:
        row = db.execute(
            "SELECT update_id, state, attempts FROM outbox WHERE id = ?", (outbox_id,)
        ).fetchone()
        if row is None:
            raise StoreError(self.path, operation, f"no outbox message {outbox_id}")
        return row

    def _finish_update(self, db: sqlite3.Connection, update_id: int | None, now: float) -> None:
        """The update is done once no part of its reply is still pending."""
        if update_id is not None:
            db.execute(
                "UPDATE updates SET state = 'done', done_at = ? WHERE update_id = ? AND NOT EXISTS"
                " (SELECT 1 FROM outbox WHERE update_id = ? AND state = 'pending')",
                (now, update_id, update_id),
            )


def _run(db: sqlite3.Connection, begin: str | None, work: _Work[_T]) -> _T:
    """Run ``work`` (on the store thread), inside one transaction when ``begin`` is given."""
    if begin is None:
        return work(db)
    db.execute(begin)
    try:
        result = work(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    return result


def _run_batch(db: sqlite3.Connection, works: list[_Work[Any]]) -> list[tuple[bool, Any]]:
    """Run writes in one transaction, each in a savepoint; (ok, result or error) for each."""
    if len(works) == 1:
        try:
            return [(True, _run(db, "BEGIN IMMEDIATE", works[0]))]
        except Exception as exc:
            return [(False, exc)]
    results: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
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
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    return results


def _compact(db: sqlite3.Connection) -> None:
    """Hand freed pages back (``auto_vacuum = INCREMENTAL``) and truncate the WAL, so the files
    shrink after a prune instead of only never growing again."""
    db.execute("PRAGMA incremental_vacuum").fetchall()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _outbox_rows(
    db: sqlite3.Connection, where: str, args: tuple[Any, ...], limit: int = -1
) -> list[OutboxMessage]:
    rows = db.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {where} ORDER BY id LIMIT ?", (*args, limit)
    ).fetchall()
    return [OutboxMessage(*row) for row in rows]


def _message_text(payload: dict[str, Any]) -> str | None:
    """The text (or caption) of a Telegram update's message, or of a bare message payload."""
    for key in ("message", "edited_message", "channel_post", "business_message"):
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    for key in ("text", "caption"):
        if isinstance(payload.get(key), str) and payload[key]:
            return str(payload[key])
    return None


def _describe(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc) or type(exc).__name__
