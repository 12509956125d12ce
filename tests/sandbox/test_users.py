"""Simulated users: rate, bounds, voice and group shares, logs, and the ledger they fill."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from khronos_cli.sandbox import SANDBOX_TOKEN, FloodLimits, SimulatedUsers, TelegramStandIn
from tests.support import async_wait_for


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(flood_limits=FloodLimits.off()) as stand_in:
        yield stand_in


async def echo_bot(base_url: str, *, answer_twice: int | None = None) -> None:
    """A minimal bot for these tests: long-polls and replies "echo: ..." to every message."""
    async with httpx.AsyncClient(base_url=f"{base_url}/bot{SANDBOX_TOKEN}", timeout=10) as http:
        offset = 0
        while True:
            polled = await http.post("/getUpdates", json={"offset": offset, "timeout": 5})
            for update in polled.json()["result"]:
                message = update["message"]
                text = message.get("text", "(voice)")
                answer = {
                    "chat_id": message["chat"]["id"],
                    "text": f"echo: {text}",
                    "reply_parameters": {"message_id": message["message_id"]},
                }
                await http.post("/sendMessage", json=answer)
                if message["message_id"] == answer_twice:
                    await http.post("/sendMessage", json=answer)
                offset = update["update_id"] + 1


@contextlib.asynccontextmanager
async def running_bot(telegram: TelegramStandIn, **options: int) -> AsyncIterator[None]:
    task = asyncio.create_task(echo_bot(telegram.base_url, **options))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_every_message_is_pushed_logged_and_answered(telegram: TelegramStandIn) -> None:
    """count messages go round-robin over the users, voice notes included, and all get answered."""
    lines: list[str] = []
    users = SimulatedUsers(
        telegram, users=3, rate=500, count=30, voice_share=0.3, seed=1, on_line=lines.append
    )
    async with running_bot(telegram):
        users.start()
        report = await users.wait_answered(timeout=10)
        await users.aclose()
    assert report.exactly_once, report.summary()
    assert (report.sent, report.answered, users.sent) == (30, 30, 30)
    assert [m.user_id for m in telegram.pushed[:4]] == [1001, 1002, 1003, 1001]
    assert {m.chat_id for m in telegram.pushed} == {1001, 1002, 1003}
    assert 0 < sum(m.kind == "voice" for m in telegram.pushed) < 30
    for message in telegram.pushed:  # texts are repr-quoted: never taken as markup
        assert any(line.endswith(repr(message.text)) for line in lines)
    assert sum(line.startswith("bot -> ") for line in lines) == 30


async def test_ledger_sees_duplicates_from_the_bot(telegram: TelegramStandIn) -> None:
    """A bot that answers one message twice shows up as a duplicate in the users' ledger."""
    users = SimulatedUsers(telegram, rate=500, count=5, voice_share=0)
    async with running_bot(telegram, answer_twice=3):
        await users.run()
        await async_wait_for(lambda: len(telegram.deliveries) == 6)
        report = users.report()
        await users.aclose()
    assert report.duplicates == (3,)
    assert report.answered == 5
    assert not report.exactly_once


async def test_duration_bounds_the_run(telegram: TelegramStandIn) -> None:
    """With rate 100/s and duration 0.1 s, exactly the 10 messages due in that time are sent."""
    users = SimulatedUsers(telegram, rate=100, duration=0.1)
    report = await asyncio.wait_for(users.run(), timeout=5)
    await users.aclose()
    assert report.sent == 10
    assert users.finished


async def test_groups_get_their_share(telegram: TelegramStandIn) -> None:
    """With group_share 1.0 every message goes to one of the groups (negative chat ids)."""
    users = SimulatedUsers(telegram, rate=1000, count=20, groups=2, group_share=1.0)
    await users.run()
    await users.aclose()
    chats = {m.chat_id for m in telegram.pushed}
    assert len(chats) == 2
    assert all(chat < 0 for chat in chats)


async def test_same_seed_same_conversation() -> None:
    """Two runs with one seed push the same texts and kinds, so a run can be replayed."""
    runs = []
    for _ in range(2):
        async with TelegramStandIn() as telegram:
            users = SimulatedUsers(telegram, rate=1000, count=15, voice_share=0.4, seed=7)
            await users.run()
            await users.aclose()
            runs.append([(m.chat_id, m.text, m.kind) for m in telegram.pushed])
    assert runs[0] == runs[1]


async def test_wait_answered_gives_up_and_names_the_unanswered(telegram: TelegramStandIn) -> None:
    """Without a bot, wait_answered returns at its timeout with every id unanswered."""
    users = SimulatedUsers(telegram, rate=1000, count=3)
    users.start()
    report = await users.wait_answered(timeout=0.2)
    await users.aclose()
    assert report.unanswered == tuple(m.message_id for m in telegram.pushed)
    assert report.answered == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "count and/or duration"),
        ({"count": 1, "rate": 0}, "rate > 0"),
        ({"count": 1, "voice_share": 2.0}, "fractions"),
    ],
)
async def test_bad_options_are_refused(
    telegram: TelegramStandIn, options: dict[str, float], match: str
) -> None:
    """Unbounded runs, a zero rate or shares outside 0..1 are refused up front."""
    with pytest.raises(ValueError, match=match):
        SimulatedUsers(telegram, **options)  # type: ignore[arg-type]
