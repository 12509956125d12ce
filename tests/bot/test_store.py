"""The SQLite store on real files: an update's life, dedup, atomicity, crashes, modes, pruning."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from khronos_cli.bot.store import RETENTION, SCHEMA_VERSION, Store, Turn
from khronos_cli.errors import InjectedFaultError, KhronosError, StoreError
from khronos_cli.upstream.faults import FaultInjector
from tests.bot.helpers import CHAT, UNIX_NOW, reply_id, update
from tests.support import Clock


def mode_of(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def make_file(path: Path, data: bytes = b"", mode: int = 0o644) -> None:
    """Create ``path`` (and its directory) holding ``data`` with permission bits ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def names_in(directory: Path) -> list[str]:
    """The names of what ``directory`` holds."""
    return sorted(p.name for p in directory.iterdir())


async def test_the_whole_life_of_an_update(store: Store) -> None:
    """fetched -> journaled -> answered (history + outbox in one go) -> sent -> done."""
    assert await store.journal(10, CHAT, update(10, "what time is it?"))
    [pending] = await store.pending_updates()
    assert (pending.update_id, pending.chat_id) == (10, CHAT)
    assert pending.payload["message"]["text"] == "what time is it?"
    assert (await store.counts())["journaled"] == 1

    outbox_id = await reply_id(store, 10, CHAT, "noon", reply_to_message_id=510)
    assert await store.pending_updates() == []
    [message] = await store.pending_outbox()
    assert (message.id, message.chat_id, message.text) == (outbox_id, CHAT, "noon")
    assert (message.update_id, message.reply_to_message_id, message.source) == (10, 510, "reply")
    assert [(t.role, t.text) for t in await store.history(CHAT)] == [
        ("user", "what time is it?"),
        ("assistant", "noon"),
    ]
    counts = await store.counts()
    assert (counts["journaled"], counts["answered"], counts["outbox"]) == (0, 1, 1)

    assert await store.mark_sent(outbox_id, telegram_message_id=9001)
    assert await store.pending_outbox() == []
    assert not await store.mark_sent(outbox_id, telegram_message_id=9001)
    counts = await store.counts()
    assert (counts["answered"], counts["outbox"], counts["done"], counts["sent"]) == (0, 0, 1, 1)


@pytest.mark.parametrize("state", ["journaled", "answered", "sent"])
async def test_a_redelivered_update_is_not_taken_again(store: Store, state: str) -> None:
    """A redelivered update id is refused whether it is journaled, answered-not-sent or sent."""
    assert await store.journal(7, CHAT, update(7))
    if state in ("answered", "sent"):
        outbox_id = await reply_id(store, 7, CHAT, "hi")
        if state == "sent":
            await store.mark_sent(outbox_id, 1)
    before = (await store.pending_updates(), await store.pending_outbox(), await store.counts())
    assert not await store.journal(7, CHAT, update(7, "the same update again"))
    after = (await store.pending_updates(), await store.pending_outbox(), await store.counts())
    assert after == before


async def test_a_poll_is_journaled_whole_and_a_repeat_in_it_is_refused(store: Store) -> None:
    """journal_many says which updates of a poll are new, a repeated id within it included."""
    assert await store.journal(1, CHAT, update(1))
    batch = [(1, CHAT, update(1)), (2, CHAT, update(2)), (3, CHAT, update(3)), (2, CHAT, update(2))]
    assert await store.journal_many(batch) == [False, True, True, False]
    assert [p.update_id for p in await store.pending_updates()] == [1, 2, 3]


async def test_a_payload_beyond_orjson_is_journaled_as_it_came(store: Store) -> None:
    """An integer past 64 bits (orjson refuses it) is journaled and read back unchanged."""
    payload = {**update(4), "huge": 2**70 + 1}
    assert await store.journal(4, CHAT, payload)
    [pending] = await store.pending_updates()
    assert pending.payload == payload


async def test_record_reply_is_atomic(store: Store, db_path: Path) -> None:
    """When the outbox insert fails, the answered mark and the history turns are rolled back."""
    await store.journal(1, CHAT, update(1, "question"))
    with sqlite3.connect(db_path) as raw:  # a real SQLite failure at the last statement
        raw.execute(
            "CREATE TRIGGER no_outbox BEFORE INSERT ON outbox"
            " BEGIN SELECT RAISE(ABORT, 'outbox refuses rows'); END"
        )
    raw.close()
    with pytest.raises(StoreError, match="outbox refuses rows") as caught:
        await store.record_reply(1, CHAT, "answer")
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert [u.update_id for u in await store.pending_updates()] == [1]
    assert await store.history(CHAT) == []
    assert await store.pending_outbox() == []

    with sqlite3.connect(db_path) as raw:
        raw.execute("DROP TRIGGER no_outbox")
    raw.close()
    outbox_id = await reply_id(store, 1, CHAT, "answer")
    assert [m.id for m in await store.pending_outbox()] == [outbox_id]
    assert len(await store.history(CHAT)) == 2


async def test_concurrent_writes_share_commits_and_fail_alone(store: Store, db_path: Path) -> None:
    """Writes issued together are group-committed; one failing write undoes only itself."""
    for i in range(1, 4):
        await store.journal(i, CHAT, update(i, f"q{i}"))
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "CREATE TRIGGER no_second BEFORE INSERT ON outbox WHEN NEW.update_id = 2"
            " BEGIN SELECT RAISE(ABORT, 'not this one'); END"
        )
    raw.close()
    writes = [store.journal(100 + i, CHAT, update(100 + i, "x")) for i in range(50)]
    writes += [store.record_reply(i, CHAT, f"a{i}") for i in range(1, 4)]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert results[:50] == [True] * 50
    assert isinstance(results[51], StoreError) and "not this one" in str(results[51])
    assert isinstance(results[50], list) and isinstance(results[52], list)
    assert [u.update_id for u in await store.pending_updates(limit=1)] == [2]
    assert sorted(m.update_id for m in await store.pending_outbox()) == [1, 3]
    assert (await store.counts())["journaled"] == 51


async def test_record_reply_twice_returns_the_same_outbox_row(store: Store) -> None:
    """Recording a reply again (a retry after a cancelled call) changes nothing."""
    await store.journal(3, CHAT, update(3))
    first = await store.record_reply(3, CHAT, "one")
    assert await store.record_reply(3, CHAT, "two") == first
    assert [m.text for m in await store.pending_outbox()] == ["one"]
    assert len(await store.history(CHAT)) == 2


async def test_record_reply_for_an_unknown_update_is_refused(store: Store) -> None:
    """An update that was never journaled cannot be answered."""
    with pytest.raises(StoreError, match="not journaled"):
        await store.record_reply(99, CHAT, "answer")
    assert await store.pending_outbox() == []


async def test_user_text_overrides_the_payload(store: Store) -> None:
    """A voice note's transcription is what the history records as the user's turn."""
    await store.journal(5, CHAT, {"update_id": 5, "message": {"voice": {"file_id": "x"}}})
    await store.record_reply(5, CHAT, "heard you", user_text="transcribed words")
    assert [t.text for t in await store.history(CHAT)] == ["transcribed words", "heard you"]
    await store.journal(6, CHAT, {"update_id": 6, "message": {"sticker": {}}})
    await store.record_reply(6, CHAT, "nice sticker")
    assert [t.role for t in await store.history(CHAT)][-1:] == ["assistant"]
    assert len(await store.history(CHAT)) == 3


_CHILD = """
import asyncio, sys
from khronos_cli.bot.store import Store

async def main():
    store = await Store.open(sys.argv[1], synchronous=sys.argv[2])
    for i in range(1, 100_000):
        await store.journal(i, 1, {"message": {"text": f"hi {i}"}})
        print("journaled", i, flush=True)
        if i % 2 == 0:
            outbox_id = (await store.record_reply(i, 1, f"reply {i}"))[0].id
            print("answered", i, flush=True)
            if i % 4 == 0:
                await store.mark_sent(outbox_id, 10_000 + i)
                print("sent", i, flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_committed_rows_survive_kill_9(db_path: Path, synchronous: str) -> None:
    """A process SIGKILLed mid-stream leaves every row it reported committed to the next start."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(db_path),
        synchronous,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    lines: list[bytes] = []
    async with asyncio.timeout(60):
        while sum(line.startswith(b"sent") for line in lines) < 10:
            line = await child.stdout.readline()
            assert line, "the child died before it was killed"
            lines.append(line)
        child.kill()
        lines += (await child.stdout.read()).splitlines(keepends=True)
        assert await child.wait() == -9
    done: dict[str, set[int]] = {"journaled": set(), "answered": set(), "sent": set()}
    for line in lines:
        if line.endswith(b"\n"):
            kind, number = line.split()
            done[kind.decode()].add(int(number))

    store = await Store.open(db_path)
    try:
        pending = {u.update_id for u in await store.pending_updates()}
        outbox = {m.update_id for m in await store.pending_outbox()}
        assert done["answered"].isdisjoint(pending)
        assert done["answered"] - done["sent"] <= outbox
        assert done["sent"].isdisjoint(outbox)
        assert (await store.counts())["done"] >= len(done["sent"])
        for update_id in sorted(done["journaled"]):
            assert not await store.journal(update_id, 1, {}), f"update {update_id} was lost"
    finally:
        await store.aclose()


async def test_the_files_are_private(store: Store, db_path: Path) -> None:
    """The database and its -wal and -shm files are mode 0600, in a 0700 directory."""
    await store.journal(1, CHAT, update(1))
    for suffix in ("", "-wal", "-shm"):
        assert mode_of(Path(f"{db_path}{suffix}")) == 0o600, suffix
    assert mode_of(db_path.parent) == 0o700


async def test_an_existing_loose_file_is_tightened(db_path: Path) -> None:
    """An existing database readable by others is made 0600 when opened."""
    make_file(db_path, mode=0o644)
    store = await Store.open(db_path)
    await store.aclose()
    assert mode_of(db_path) == 0o600


async def test_fresh_file_is_wal_and_migrated(store: Store, db_path: Path) -> None:
    """A new file is in WAL mode with the current schema version in PRAGMA user_version."""
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


async def test_a_file_from_a_newer_khronos_is_refused(db_path: Path) -> None:
    """A schema version above ours is refused with a StoreError, never downgraded."""
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="newer khronos"):
        await Store.open(db_path)


async def test_a_file_that_is_not_a_database_is_a_store_error(db_path: Path) -> None:
    """Garbage in the file gives a clean StoreError chained to the sqlite3 error."""
    make_file(db_path, b"this is not sqlite\n" * 100)
    with pytest.raises(StoreError, match="open") as caught:
        await Store.open(db_path)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert isinstance(caught.value, KhronosError)


async def test_read_only_reads_work_and_writes_fail_cleanly(db_path: Path) -> None:
    """Opened with SQLite's mode=ro, reads work and a write raises StoreError, not a crash."""
    writer = await Store.open(db_path)
    await writer.journal(1, CHAT, update(1))
    await writer.aclose()
    reader = await Store.open(db_path, read_only=True)
    try:
        assert [u.update_id for u in await reader.pending_updates()] == [1]
        with pytest.raises(StoreError, match="readonly") as caught:
            await reader.journal(2, CHAT, update(2))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert caught.value.operation == "journal"
        assert [u.update_id for u in await reader.pending_updates()] == [1]
    finally:
        await reader.aclose()


async def test_read_only_on_a_missing_file_is_a_store_error(db_path: Path, tmp_path: Path) -> None:
    """Read-only open of a file that does not exist fails cleanly and creates nothing."""
    with pytest.raises(StoreError, match="open"):
        await Store.open(db_path, read_only=True)
    assert names_in(tmp_path) == []


async def test_prune_forgets_old_done_ids_and_keeps_live_work(db_path: Path) -> None:
    """Prune drops done updates and finished outbox rows past the cutoff, never pending work."""
    clock = Clock(UNIX_NOW)
    store = await Store.open(db_path, clock=clock)
    try:
        for update_id in (1, 2, 3):
            await store.journal(update_id, CHAT, update(update_id))
        await store.mark_sent(await reply_id(store, 1, CHAT, "a"), 1)
        await store.mark_sent(await reply_id(store, 2, CHAT, "b"), 2)
        await store.record_reply(3, CHAT, "c")  # answered, never sent
        await store.mark_sent(await store.enqueue_message(CHAT, "api"), 3)
        await store.journal(4, CHAT, update(4))  # journaled, never answered
        clock.now += RETENTION + 1
        await store.journal(5, CHAT, update(5))
        await store.mark_sent(await reply_id(store, 5, CHAT, "e"), 5)

        assert await store.prune(RETENTION) == {"updates": 2, "outbox": 3, "turns": 0}
        assert [u.update_id for u in await store.pending_updates()] == [4]
        assert [m.update_id for m in await store.pending_outbox()] == [3]
        assert not await store.journal(5, CHAT, update(5))  # still remembered
        assert await store.journal(1, CHAT, update(1))  # forgotten: past Telegram's 24 h
    finally:
        await store.aclose()


async def test_prune_can_cap_each_conversation(store: Store) -> None:
    """``keep_turns`` keeps only each chat's most recent turns."""
    for update_id in range(1, 5):
        await store.journal(update_id, CHAT, update(update_id, f"q{update_id}"))
        await store.record_reply(update_id, CHAT, f"a{update_id}")
    await store.journal(9, 77, update(9, "other", chat_id=77))
    await store.record_reply(9, 77, "other answer")
    removed = await store.prune(RETENTION, keep_turns=3)
    assert removed["turns"] == 5
    assert [t.text for t in await store.history(CHAT)] == ["a3", "q4", "a4"]
    assert len(await store.history(77)) == 2
    with pytest.raises(ValueError):
        await store.prune(-1)


async def test_history_is_recent_oldest_first_and_reset_clears_it(store: Store) -> None:
    """history(limit) returns the last turns in order; reset forgets only that chat."""
    for update_id in range(1, 4):
        await store.journal(update_id, CHAT, update(update_id, f"q{update_id}"))
        await store.record_reply(update_id, CHAT, f"a{update_id}")
    await store.journal(8, 77, update(8, "x", chat_id=77))
    await store.record_reply(8, 77, "y")
    recent = await store.history(CHAT, limit=3)
    assert [t.text for t in recent] == ["a2", "q3", "a3"]
    assert all(isinstance(t, Turn) for t in recent)
    assert await store.reset(CHAT) == 6
    assert await store.history(CHAT) == []
    assert len(await store.history(77)) == 2


async def test_enqueue_and_failed_sends_count_attempts(store: Store) -> None:
    """Failures count attempts and keep the error; a final failure leaves the outbox."""
    first = await store.enqueue_message(CHAT, "from another service", source="http")
    second = await store.enqueue_message(CHAT, "second")
    [message, _] = await store.pending_outbox()
    assert (message.id, message.source, message.update_id, message.attempts) == (
        first,
        "http",
        None,
        0,
    )
    assert await store.mark_failed(first, "HTTP 502") == 1
    assert await store.mark_failed(first, "HTTP 503") == 2
    [message, _] = await store.pending_outbox()
    assert (message.attempts, message.last_error) == (2, "HTTP 503")
    assert await store.mark_failed(second, "HTTP 403: bot was blocked", final=True) == 1
    assert [m.id for m in await store.pending_outbox()] == [first]
    assert (await store.counts())["failed"] == 1
    with pytest.raises(StoreError, match="no outbox message"):
        await store.mark_failed(12345, "x")


async def test_concurrent_calls_are_serialised_without_losing_any(store: Store) -> None:
    """Many concurrent journal calls (with duplicates) each commit exactly once."""
    ids = list(range(100)) * 2
    results = await asyncio.gather(*(store.journal(i, CHAT, update(i)) for i in ids))
    assert sum(results) == 100
    assert len(await store.pending_updates()) == 100


async def test_database_outages_fail_store_calls(db_path: Path) -> None:
    """An injected ``database`` outage turns store calls into StoreErrors until it ends."""
    faults = FaultInjector()
    store = await Store.open(db_path, faults=faults, busy_timeout=0.02)
    try:
        faults.start("database", "down")
        with pytest.raises(StoreError, match="injected") as caught:
            await store.journal(1, CHAT, update(1))
        assert isinstance(caught.value.__cause__, InjectedFaultError)
        faults.start("database", "timeout")
        with pytest.raises(StoreError, match="timeout"):
            await store.counts()
        faults.start("database", "slow", latency=0.01)
        assert await store.journal(1, CHAT, update(1))
        faults.stop()
        assert [u.update_id for u in await store.pending_updates()] == [1]
    finally:
        await store.aclose()


async def test_a_closed_store_refuses_calls(db_path: Path) -> None:
    """After aclose every call raises StoreError, and closing again is harmless."""
    store = await Store.open(db_path)
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.journal(1, CHAT, update(1))
