"""The four limiters built from config, and the Telegram rules that are not numbers."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from redis.asyncio import Redis

from khronos_cli.config import LIMITER_DEFAULTS, LimiterSettings, Rate
from khronos_cli.errors import ConfigError
from khronos_cli.resilience.limiter.registry import PRIORITY_BULK, PRIORITY_REPLY, Limiters
from tests.support import async_wait_for


async def test_builds_the_four_design_limiters() -> None:
    """Defaults give telegram, global, anthropic and whisper with DESIGN.md's numbers."""
    limiters = Limiters.build()
    assert list(limiters) == ["telegram", "global", "anthropic", "whisper"]
    snapshot = limiters.snapshot()
    for name in limiters:
        assert {"executing", "queued", "done", "dropped"} <= set(snapshot[name])
        assert snapshot[name]["backend"] == "memory"
    assert limiters["anthropic"].settings.max_queued == 50
    assert limiters["whisper"].settings.max_concurrent == 2
    await limiters.aclose()


async def test_builds_on_redis_from_a_url(redis_url: str) -> None:
    """With redis_url every limiter decides on Redis, and aclose closes the client it opened."""
    limiters = Limiters.build(redis_url=redis_url, bot="7")

    async def send() -> str:
        return "sent"

    assert await limiters["telegram"].schedule(send, key=1) == "sent"
    assert limiters.snapshot()["telegram"]["backend"] == "redis"
    client = Redis.from_url(redis_url)
    assert await client.exists("khronos:{7}:limiter:telegram:gcra:key:1")
    await client.aclose()
    await limiters.aclose()


def test_rates_pyrate_cannot_enforce_are_a_config_error() -> None:
    """Rates that tighten as the period grows are refused with the limiter's key named."""
    bad = LimiterSettings("x", rates=(Rate(10, 1.0), Rate(5, 60.0)))
    with pytest.raises(ConfigError, match=r"limiters\.x\.rates"):
        Limiters.build({"x": bad})


async def test_a_reply_overtakes_queued_bulk_sends() -> None:
    """A reply (PRIORITY_REPLY) overtakes queued bulk sends for the bot's shared budget."""
    settings = dataclasses.replace(LIMITER_DEFAULTS["telegram"], global_max_concurrent=1)
    limiters = Limiters.build({"telegram": settings})
    telegram = limiters["telegram"]
    order: list[str] = []
    gate = asyncio.Event()

    async def call(tag: str) -> str:
        order.append(tag)
        await gate.wait()
        return tag

    def send(chat: int, tag: str, priority: int) -> asyncio.Task[str]:
        return asyncio.create_task(telegram.schedule(call, tag, key=chat, priority=priority))

    busy = send(1, "busy", PRIORITY_BULK)
    await async_wait_for(lambda: order == ["busy"])
    tasks = [send(chat, f"bulk{chat}", PRIORITY_BULK) for chat in (2, 3)]
    tasks.append(send(4, "reply", PRIORITY_REPLY))
    await async_wait_for(lambda: telegram.snapshot()["queued"] == 3)
    gate.set()
    await asyncio.gather(busy, *tasks)
    assert order == ["busy", "reply", "bulk2", "bulk3"]
    assert telegram.snapshot()["received"] == 4
    await limiters.aclose()


async def test_a_429_halts_its_chat_and_several_chats_halt_the_bot() -> None:
    """A 429 on one chat halts that chat only; a third chat refused within the flood window
    halts every chat; a 429 with no chat halts the bot at once."""
    limiters = Limiters.build()
    assert limiters.telegram_429(3.0, chat_id=-100) == "chat"
    assert limiters.snapshot()["telegram"]["halted_for"] == 0
    assert limiters["telegram"].room(5) is None  # other chats are not touched
    assert limiters.telegram_429(3.0, chat_id=-100) == "chat"  # the same chat again
    assert limiters.telegram_429(3.0, chat_id=7) == "chat"
    assert limiters.telegram_429(3.0, chat_id=8) == "bot"
    assert 2.9 < limiters.snapshot()["telegram"]["halted_for"] <= 3.0
    await limiters.aclose()
    alone = Limiters.build()
    assert alone.telegram_429(2.0) == "bot"
    assert 1.9 < alone.snapshot()["telegram"]["halted_for"] <= 2.0
    await alone.aclose()


async def test_stop_returns_handed_back_jobs_by_limiter() -> None:
    """Limiters.stop stops all of them and reports what each handed back."""
    limiters = Limiters.build()
    assert await limiters.stop(drop_waiting=True) == {name: [] for name in limiters}
    await limiters.aclose()


async def test_a_chats_own_limit_has_the_wider_guard() -> None:
    """The telegram limiter paces one chat at 1 per 1.05 s (TELEGRAM_KEY_GUARD), not 1.008 s: a
    second answer to the chat 1.03 s after the first waits until 1.05 s."""
    now = [100.0]
    limiters = Limiters.build(clock=lambda: now[0])
    telegram = limiters["telegram"]
    sent: list[float] = []

    async def send() -> None:
        sent.append(now[0])

    await telegram.schedule(send, key=1)
    now[0] = 101.03
    second = asyncio.ensure_future(telegram.schedule(send, key=1))
    await async_wait_for(lambda: limiters.snapshot()["telegram"]["queued"] == 1)
    assert sent == [100.0]
    now[0] = 101.06
    await second
    assert sent == [100.0, 101.06]
    await limiters.aclose()
