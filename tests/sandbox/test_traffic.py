"""The simulated users' mix: what it holds, that it is repeatable and modest, and that a bot
following the rules passes the ledger while the bot of today does not."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from khronos_cli.sandbox import FloodLimits, SimulatedUsers, TelegramStandIn
from khronos_cli.sandbox.files import MAX_DOWNLOAD_SIZE
from khronos_cli.sandbox.traffic import GROUP_RATE, quoted
from tests.sandbox import reference_bot


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(flood_limits=FloodLimits.off()) as stand_in:
        yield stand_in


@contextlib.asynccontextmanager
async def running(telegram: TelegramStandIn, *, naive: bool = False) -> AsyncIterator[None]:
    task = asyncio.create_task(reference_bot.run(telegram.base_url, naive=naive))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mixed(telegram: TelegramStandIn, count: int = 200, seed: int = 3) -> SimulatedUsers:
    return SimulatedUsers(
        telegram,
        users=4,
        rate=2000,
        count=count,
        groups=2,
        group_share=0.35,
        voice_share=0.1,
        seed=seed,
        mix=True,
        on_line=lambda line: None,
    )


async def test_the_mix_holds_each_kind_of_traffic(telegram: TelegramStandIn) -> None:
    """200 mixed pushes hold long messages, every directive, stickers, a blocked user, a big and
    an empty voice note, group commands (ours and another bot's), mentions, chatter, service
    messages and a migration, while most private messages stay plain."""
    users = mixed(telegram)
    await users.run()
    await users.aclose()
    pushed = telegram.pushed
    texts = [m.text for m in pushed]
    kinds = Counter(m.kind for m in pushed)
    assert any(len(t) == 4090 for t in texts)
    for directive in ("#long", "#blocks", "#refuse", "#empty"):
        assert any(t.endswith(directive) for t in texts), directive
    assert kinds["sticker"] and kinds["service"] and kinds["command"] and kinds["my_chat_member"]
    assert len(telegram.chats.blocks) == 1 and len(telegram.chats.migrations) == 1
    voices = [telegram.chats.message(m.chat_id, m.message_id) for m in pushed if m.kind == "voice"]
    assert any(v and v["voice"]["file_size"] > MAX_DOWNLOAD_SIZE for v in voices)
    assert "" in [m.text for m in pushed if m.kind == "voice"]
    assert "/help@OtherBot" in texts
    addressed = [
        m.expects_answer for m in pushed if m.chat_id < 0 and m.kind in ("text", "command")
    ]
    assert True in addressed and False in addressed
    private = [m for m in pushed if m.chat_id > 0 and m.kind == "text"]
    plain = [m for m in private if "#" not in m.text.split("(#")[0] and len(m.text) < 200]
    assert len(plain) > 0.7 * len(private)
    per_group = Counter(m.chat_id for m in pushed if m.chat_id < 0 and m.kind != "service")
    assert max(per_group.values()) <= GROUP_RATE + 2  # the bot added and the migration: 2 more


async def test_the_mix_is_repeatable(telegram: TelegramStandIn) -> None:
    """Two mixed runs with one seed push the same chats, kinds and texts."""
    runs = []
    for _ in range(2):
        async with TelegramStandIn() as stand_in:
            users = mixed(stand_in, count=120)
            await users.run()
            await users.aclose()
            runs.append([(m.chat_id, m.kind, m.text, m.expects_answer) for m in stand_in.pushed])
    assert runs[0] == runs[1]


async def test_a_bot_that_follows_the_rules_is_exactly_once(telegram: TelegramStandIn) -> None:
    """A bot that answers only what is addressed to it, splits long answers, drops the blocked
    user's and resends after the migration gets exactly_once over the whole mix."""
    users = mixed(telegram)
    async with running(telegram):
        users.start()
        report = await users.wait_answered(timeout=30)
        await users.aclose()
    assert report.exactly_once, report.summary()
    assert len(report.undeliverable) == 1
    assert report.parts and all(parts == 2 for _, parts in report.parts)
    assert report.expected < report.sent
    assert report.kinds["service"] >= 3


async def test_the_bot_of_today_shows_its_gaps(telegram: TelegramStandIn) -> None:
    """A bot that answers every message in one part leaves long answers unanswered and answers
    messages that deserve none: the ledger says so."""
    users = mixed(telegram)
    async with running(telegram, naive=True):
        await users.run()
        await users.wait_answered(timeout=3)
        report = users.report()
        await users.aclose()
    assert not report.exactly_once
    assert report.unexpected
    assert report.unanswered


async def test_plain_group_traffic_is_addressed_and_capped(telegram: TelegramStandIn) -> None:
    """Without the mix every group message mentions the bot (it deserves an answer), and no
    group gets more than 20 pushes a minute: the rest go to private chats."""
    users = SimulatedUsers(telegram, rate=1000, count=60, groups=1, group_share=1.0)
    await users.run()
    await users.aclose()
    in_group = [m for m in telegram.pushed if m.chat_id < 0]
    assert len(in_group) == GROUP_RATE
    assert all(m.expects_answer for m in telegram.pushed)
    assert all(m.text.startswith("@khronos_sandbox_bot ") for m in in_group if m.kind == "text")


def test_log_lines_quote_texts_and_shorten_long_ones() -> None:
    """A text is repr-quoted in a log line; one over 160 characters is cut there, with its
    length."""
    assert quoted("[bold]x[/bold]") == "'[bold]x[/bold]'"
    long = quoted("a" * 4090)
    assert long.startswith("'" + "a" * 160 + "'") and long.endswith("(4090 characters)")
