"""The store's newer rows on real files: replies in parts, skipped updates, migrated chats,
retention that keeps the file bounded, and the v1 -> v2 migration of an existing file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from khronos_cli.bot.schema import MIGRATIONS
from khronos_cli.bot.store import SCHEMA_VERSION, Store
from tests.bot.helpers import CHAT, UNIX_NOW, update
from tests.support import Clock


async def test_a_reply_in_parts_is_done_once_every_part_is_sent(store: Store) -> None:
    """Only part 0 replies to the user; the update is done after the last part is sent."""
    await store.journal(1, CHAT, update(1))
    parts = await store.record_reply(1, CHAT, ["one", "two", "three"], 501)
    assert [(m.part, m.text, m.reply_to_message_id) for m in parts] == [
        (0, "one", 501),
        (1, "two", None),
        (2, "three", None),
    ]
    assert await store.pending_outbox() == parts
    assert [t.text for t in await store.history(CHAT)] == ["hello", "one\n\ntwo\n\nthree"]
    await store.mark_sent(parts[0].id, 10)
    await store.mark_sent(parts[1].id, 11)
    assert (await store.counts())["answered"] == 1
    await store.mark_sent(parts[2].id, 12)
    assert (await store.counts())["done"] == 1
    assert await store.record_reply(1, CHAT, ["again"]) == []  # answered before: nothing new


async def test_a_part_given_up_on_takes_the_rest_of_its_reply(store: Store) -> None:
    """A final failure (the user blocked the bot) fails the later parts too; the update is done."""
    await store.journal(1, CHAT, update(1))
    first, _second = await store.record_reply(1, CHAT, ["a", "b"])
    await store.mark_failed(first.id, "403: blocked", final=True)
    assert await store.pending_outbox() == []
    assert (await store.counts())["done"] == 1 and (await store.counts())["failed"] == 2


async def test_skip_finishes_an_update_with_nothing_to_send(store: Store) -> None:
    """A service message is journaled, then skipped: done, no outbox row, not redelivered."""
    await store.journal(3, CHAT, update(3))
    assert await store.skip(3)
    assert not await store.skip(3)
    assert await store.pending_updates() == [] and await store.pending_outbox() == []
    assert not await store.journal(3, CHAT, update(3))


async def test_a_migrated_chat_keeps_its_history_and_pending_messages(store: Store) -> None:
    """migrate_chat moves turns, pending messages and unanswered updates to the new id."""
    await store.journal(1, -5, update(1, chat_id=-5))
    [sent] = await store.record_reply(1, -5, "first answer")
    await store.mark_sent(sent.id, 1)
    await store.journal(2, -5, update(2, chat_id=-5))
    [waiting] = await store.record_reply(2, -5, "second answer")
    await store.journal(3, -5, update(3, chat_id=-5))
    moved = await store.migrate_chat(-5, -1005)
    assert moved == {"turns": 4, "outbox": 1, "updates": 2}
    assert [t.text for t in await store.history(-1005)] == [
        "hello",
        "first answer",
        "hello",
        "second answer",
    ]
    assert [(m.id, m.chat_id) for m in await store.pending_outbox()] == [(waiting.id, -1005)]
    assert [u.chat_id for u in await store.pending_updates()] == [-1005]
    assert await store.migrate_chat(-5, -1005) == {"turns": 0, "outbox": 0, "updates": 0}


async def test_retention_keeps_the_file_bounded_over_many_updates(db_path: Path) -> None:
    """8,000 updates answered and sent over 'days', pruned each 'hour': the rows and the file
    stop growing, while every chat keeps its newest turns."""
    clock = Clock(UNIX_NOW)
    store = await Store.open(db_path, clock=clock, synchronous="NORMAL")
    sizes = []
    try:
        for hour in range(40):
            ids = [hour * 200 + i + 1 for i in range(200)]
            chats = {update_id: 1 + update_id % 50 for update_id in ids}
            await asyncio.gather(
                *(store.journal(u, chats[u], update(u, "q" * 200, chats[u])) for u in ids)
            )
            replies = await asyncio.gather(
                *(store.record_reply(u, chats[u], "a" * 400) for u in ids)
            )
            await asyncio.gather(*(store.mark_sent(r.id, r.id) for [r] in replies))
            clock.now += 3600
            await store.prune(
                6 * 3600, outbox_older_than=3600, turns_older_than=12 * 3600, keep_turns=20
            )
            sizes.append(files_size(db_path))
        counts = await store.counts()
    finally:
        await store.aclose()
    assert counts["done"] <= 6 * 200 and counts["sent"] <= 200
    assert counts["turns"] == 50 * 20 and counts["chats"] == 50
    assert max(sizes[20:]) <= 1.2 * max(sizes[8:12]), sizes


def files_size(db_path: Path) -> int:
    """The database file and its write-ahead log, in bytes."""
    return os.path.getsize(db_path) + os.path.getsize(f"{db_path}-wal")


async def test_a_v1_file_is_migrated_with_its_pending_messages(db_path: Path) -> None:
    """A file written by the first release (outbox without parts) opens at the new schema with
    its rows intact and ids going on."""
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    for statement in MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO updates VALUES (7, 1, '{}', 'answered', 1.0, 1.0, NULL)")
    raw.execute(
        "INSERT INTO outbox (id, chat_id, text, update_id, source, created_at)"
        " VALUES (41, 1, 'kept', 7, 'reply', 1.0)"
    )
    raw.commit()
    raw.close()
    store = await Store.open(db_path)
    try:
        [kept] = await store.pending_outbox()
        assert (kept.id, kept.text, kept.part) == (41, "kept", 0)
        await store.journal(8, 1, update(8))
        [fresh] = await store.record_reply(8, 1, "new")
        assert fresh.id == 42
    finally:
        await store.aclose()
    with sqlite3.connect(db_path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    check.close()
