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

The SQLite engine under it (one thread, whole transactions, group commit, durability, the fault
hook, error translation) is :mod:`khronos_cli.bot.sqlite`; the schema and its migrations are
:mod:`khronos_cli.bot.schema`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import orjson

from khronos_cli.bot.recall import Recall
from khronos_cli.bot.schema import (
    INSERT_OUTBOX,
    INSERT_UPDATE,
    MIGRATIONS,
    OUTBOX_COLUMNS,
    SCHEMA_VERSION,
    OutboxMessage,
    PendingUpdate,
    Turn,
    encode_payload,
    message_text,
)
from khronos_cli.bot.sqlite import Database, compact
from khronos_cli.errors import StoreError
from khronos_cli.upstream.faults import FaultInjector

__all__ = [
    "RETENTION",
    "SCHEMA_VERSION",
    "OutboxMessage",
    "PendingUpdate",
    "Store",
    "Turn",
]

RETENTION = 48 * 3600.0  # keep done update ids twice as long as Telegram keeps updates


class Store:
    """The bot's SQLite file. Build it with ``await Store.open(path)``; end with ``aclose()``."""

    def __init__(self, database: Database, clock: Callable[[], float]) -> None:
        self.path = database.path
        self._database = database
        self._clock = clock
        self.recall = Recall()  # the chats' recent turns, so history() rarely reads the file

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
        database = await Database.open(
            path,
            MIGRATIONS,
            faults=faults,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            read_only=read_only,
        )
        return cls(database, clock)

    async def aclose(self) -> None:
        """Finish the queued work, checkpoint and close the file. Safe to call twice."""
        await self._database.aclose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- journal --------------------------------------------------------------------------------

    async def journal_id(self) -> str:
        """This journal's own random id (made with the file, kept by backups): the name its
        replica's update claims carry, so that a restarted replica knows its own claims."""

        def work(db: sqlite3.Connection) -> str:
            return str(db.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()[0])

        return await self._database.call("journal_id", work)

    async def journal(self, update_id: int, chat_id: int, payload: dict[str, Any]) -> bool:
        """Durably record a fetched update; False when that id was seen before (the dedup)."""
        return (await self.journal_many([(update_id, chat_id, payload)]))[0]

    async def journal_many(self, updates: Sequence[tuple[int, int, dict[str, Any]]]) -> list[bool]:
        """:meth:`journal` for a poll's ``(update_id, chat_id, payload)``s, in one transaction
        (all or none); for each, whether it is new."""
        rows = [
            (update_id, chat_id, encode_payload(payload)) for update_id, chat_id, payload in updates
        ]

        def work(db: sqlite3.Connection) -> list[bool]:
            now = self._clock()
            return [db.execute(INSERT_UPDATE, (*row, now)).rowcount == 1 for row in rows]

        return await self._database.call("journal", work, write=True)

    async def pending_updates(self, limit: int | None = None) -> list[PendingUpdate]:
        """Journaled updates with no committed answer yet, oldest first."""

        def work(db: sqlite3.Connection) -> list[PendingUpdate]:
            rows = db.execute(
                "SELECT update_id, chat_id, payload, journaled_at FROM updates"
                " WHERE state = 'journaled' ORDER BY update_id LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
            return [PendingUpdate(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

        return await self._database.call("pending_updates", work)

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
        added: list[Turn] = []  # the turns the transaction added, for the recall once committed

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
            said = user_text if user_text is not None else message_text(orjson.loads(row[0]))
            if remember:
                added[:] = [Turn("user", said, now)] if said else []
                added.append(Turn("assistant", "\n\n".join(parts), now))
            db.executemany(
                "INSERT INTO turns (chat_id, role, text, update_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(chat_id, turn.role, turn.text, update_id, now) for turn in added],
            )
            messages = []
            for number, part in enumerate(parts):
                reply_to = reply_to_message_id if number == 0 else None
                values = (chat_id, part, reply_to, update_id, number, "reply", now)
                outbox_id = int(db.execute(INSERT_OUTBOX, values).lastrowid or 0)
                messages.append(
                    OutboxMessage(
                        outbox_id, chat_id, part, reply_to, update_id, "reply", 0, None, now, number
                    )
                )
            return messages

        with self.recall.writing([chat_id]):
            messages = await self._database.call("record_reply", work, write=True)
            self.recall.append(chat_id, added)
        return messages

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

        return await self._database.call("skip", work, write=True)

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

        with self.recall.writing([chat_id, new_chat_id]):
            moved = await self._database.call("migrate_chat", work, write=True)
            self.recall.forget(chat_id, new_chat_id)
        return moved

    async def enqueue_message(self, chat_id: int, text: str, *, source: str = "api") -> int:
        """Queue a message that answers no update (``POST /messages``); returns the outbox id."""

        def work(db: sqlite3.Connection) -> int:
            values = (chat_id, text, None, None, 0, source, self._clock())
            return int(db.execute(INSERT_OUTBOX, values).lastrowid or 0)

        return await self._database.call("enqueue_message", work, write=True)

    async def pending_outbox(self, limit: int | None = None) -> list[OutboxMessage]:
        """Messages not yet accepted by Telegram (and not given up on), oldest first."""

        def work(db: sqlite3.Connection) -> list[OutboxMessage]:
            return _outbox_rows(db, "state = 'pending'", (), -1 if limit is None else limit)

        return await self._database.call("pending_outbox", work)

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

        return await self._database.call("mark_sent", work, write=True)

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

        return await self._database.call("mark_failed", work, write=True)

    # -- conversations --------------------------------------------------------------------------

    async def history(self, chat_id: int, limit: int = 20) -> list[Turn]:
        """The chat's ``limit`` most recent turns, oldest first."""

        kept = self.recall.get(chat_id, limit)
        if kept is not None:
            return kept

        def work(db: sqlite3.Connection) -> list[Turn]:
            rows = db.execute(
                "SELECT role, text, created_at FROM (SELECT id, role, text, created_at FROM turns"
                " WHERE chat_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                (chat_id, limit),
            ).fetchall()
            return [Turn(*row) for row in rows]

        ticket = self.recall.ticket(chat_id)
        try:
            turns = await self._database.call("history", work)
        except BaseException:
            self.recall.release(chat_id, ticket)
            raise
        self.recall.fill(chat_id, ticket, turns, limit)  # keeps a copy of its own
        return turns

    async def reset(self, chat_id: int) -> int:
        """Forget the chat's conversation (the ``/reset`` command); returns the turns removed."""

        def work(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM turns WHERE chat_id = ?", (chat_id,)).rowcount

        with self.recall.writing([chat_id]):
            removed = await self._database.call("reset", work, write=True)
            self.recall.forget(chat_id)
        return removed

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

        with self.recall.writing(everything=True):
            removed = await self._database.call("prune", work, write=True)
        await self._database.call("compact", compact)
        return removed

    async def ping(self) -> None:
        """The ``database`` health check: one trivial read through the same thread and faults."""
        await self._database.call("ping", lambda db: db.execute("SELECT 1").fetchone())

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

        return await self._database.call("counts", work, snapshot=True)

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


def _outbox_rows(
    db: sqlite3.Connection, where: str, args: tuple[Any, ...], limit: int = -1
) -> list[OutboxMessage]:
    rows = db.execute(
        f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {where} ORDER BY id LIMIT ?", (*args, limit)
    ).fetchall()
    return [OutboxMessage(*row) for row in rows]
