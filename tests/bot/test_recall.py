"""The store's in-memory copy of recent turns: served instead of the file, never unlike it."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from khronos_cli.bot.recall import Recall
from khronos_cli.bot.store import RETENTION, Store, Turn
from tests.bot.helpers import CHAT, update

OTHER = 77


async def on_file(db_path: Path, chat_id: int, limit: int = 20) -> list[tuple[str, str]]:
    """The chat's last turns as a second store, with nothing in memory, reads them."""
    fresh = await Store.open(db_path, read_only=True)
    try:
        return [(t.role, t.text) for t in await fresh.history(chat_id, limit)]
    finally:
        await fresh.aclose()


async def answer(store: Store, update_id: int, chat_id: int, text: str) -> None:
    """Journal a message and record its reply (two turns)."""
    await store.journal(update_id, chat_id, update(update_id, f"q{text}", chat_id=chat_id))
    await store.record_reply(update_id, chat_id, f"a{text}")


async def test_history_once_read_is_served_from_memory_with_new_turns(
    store: Store, db_path: Path
) -> None:
    """After one read, answers append to the kept turns and history() reads no file."""
    await answer(store, 1, CHAT, "1")
    assert [t.text for t in await store.history(CHAT)] == ["q1", "a1"]
    misses = store.recall.misses
    for n in range(2, 14):
        await answer(store, n, CHAT, str(n))
        kept = await store.history(CHAT, 20)
        assert [(t.role, t.text) for t in kept] == await on_file(db_path, CHAT)
    assert store.recall.misses == misses
    assert store.recall.hits == 12
    assert [t.text for t in await store.history(CHAT, 3)] == ["a12", "q13", "a13"]


async def test_reset_migration_and_prune_leave_memory_agreeing_with_the_file(
    store: Store, db_path: Path
) -> None:
    """/reset, a move to a supergroup and prune(keep_turns) change what history() returns."""
    for n in range(1, 4):
        await answer(store, n, CHAT, str(n))
        await answer(store, 10 + n, OTHER, f"o{n}")
    await store.history(CHAT)
    await store.history(OTHER)
    await store.prune(RETENTION, keep_turns=2)
    assert [t.text for t in await store.history(CHAT)] == ["q3", "a3"]
    await store.migrate_chat(CHAT, -100)
    assert await store.history(CHAT) == []
    assert [t.text for t in await store.history(-100)] == ["q3", "a3"]
    await store.reset(OTHER)
    assert await store.history(OTHER) == []
    for chat_id in (CHAT, OTHER, -100):
        kept = [(t.role, t.text) for t in await store.history(chat_id)]
        assert kept == await on_file(db_path, chat_id)


async def test_concurrent_answers_and_reads_never_disagree_with_the_file(
    store: Store, db_path: Path
) -> None:
    """Answers, resets and reads of three chats interleaved at random: memory = the file."""
    chats = [CHAT, OTHER, 99]
    rng = random.Random(7)
    update_id = 0

    async def step() -> None:
        nonlocal update_id
        chat_id = rng.choice(chats)
        roll = rng.random()
        if roll < 0.05:
            await store.reset(chat_id)
        elif roll < 0.55:
            update_id += 1
            await answer(store, update_id, chat_id, str(update_id))
        else:
            await store.history(chat_id, 6)

    for _ in range(30):
        await asyncio.gather(*(step() for _ in range(12)))
        for chat_id in chats:
            kept = [(t.role, t.text) for t in await store.history(chat_id, 6)]
            assert kept == await on_file(db_path, chat_id, 6)
    assert store.recall.hits > 0


def turns(*texts: str) -> list[Turn]:
    return [Turn("user", text, 0.0) for text in texts]


def test_a_read_that_a_write_overlapped_is_not_kept() -> None:
    """A write starting while a read is out voids it; a write in flight sends reads to the file."""
    recall = Recall()
    assert recall.get(CHAT, 20) is None
    ticket = recall.ticket(CHAT)
    with recall.writing([CHAT]):
        assert recall.ticket(CHAT) is None
        recall.fill(CHAT, ticket, turns("stale"), 20)
    assert recall.get(CHAT, 20) is None
    ticket = recall.ticket(CHAT)
    recall.fill(CHAT, ticket, turns("q"), 20)
    assert [t.text for t in recall.get(CHAT, 20) or []] == ["q"]
    with recall.writing([CHAT]):
        assert recall.get(CHAT, 20) is None
        recall.append(CHAT, turns("a"))
    assert [t.text for t in recall.get(CHAT, 20) or []] == ["q", "a"]


def test_a_failed_write_forgets_the_chat() -> None:
    """What a write that raised may or may not have changed is read from the file next."""
    recall = Recall()
    recall.get(CHAT, 20)
    recall.fill(CHAT, recall.ticket(CHAT), turns("q"), 20)
    try:
        with recall.writing([CHAT]):
            raise OSError("disk full")
    except OSError:
        pass
    assert recall.get(CHAT, 20) is None


def test_only_the_recent_turns_are_kept_and_memory_is_bounded() -> None:
    """A chat keeps the most turns ever asked; chats beyond the bounds go, least recent first."""
    recall = Recall(max_chats=2, budget=10)
    recall.get(CHAT, 2)
    recall.fill(CHAT, recall.ticket(CHAT), turns("a", "b"), 2)
    assert recall.get(CHAT, 3) is None  # two of perhaps more: a longer history needs the file
    with recall.writing([CHAT]):
        recall.append(CHAT, turns("c"))
    assert [t.text for t in recall.get(CHAT, 3) or []] == ["a", "b", "c"]
    recall.fill(OTHER, recall.ticket(OTHER), turns("x"), 3)
    recall.fill(99, recall.ticket(99), turns("y"), 3)
    assert recall.get(CHAT, 1) is None  # the least recent of three chats, over max_chats
    recall.fill(5, recall.ticket(5), turns("0123456789"), 3)
    assert recall.get(OTHER, 1) is None and recall.get(99, 1) is None  # over the budget
    assert [t.text for t in recall.get(5, 1) or []] == ["0123456789"]
