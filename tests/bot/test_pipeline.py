"""The bot end to end against the sandbox stand-ins and a real SQLite file (no breakers yet)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from khronos_cli.bot.bot import FALLBACK_TEXT, HELP_TEXT, RESET_TEXT, Bot
from khronos_cli.bot.jobs import JobTracker
from khronos_cli.bot.outbox import Outbox
from khronos_cli.bot.poller import Poller
from khronos_cli.bot.store import Store
from khronos_cli.config import Secret
from khronos_cli.sandbox import FloodLimits, SandboxStack
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient
from khronos_cli.upstream.telegram import TelegramClient
from tests.support import async_wait_for


@dataclass
class Pipeline:
    stack: SandboxStack
    store: Store
    poller: Poller
    jobs: JobTracker
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self.poller.run()))

    async def halt(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()


async def build(stack: SandboxStack, path: Path) -> Pipeline:
    store = await Store.open(path)
    telegram = TelegramClient(Secret(stack.token), stack.telegram_base_url)
    anthropic = AnthropicClient(Secret(stack.anthropic_api_key), stack.anthropic_base_url)
    openai = OpenAIClient(Secret(stack.openai_api_key), stack.openai_base_url)
    bot = Bot(store, telegram, anthropic, openai)
    jobs = JobTracker()
    poller = Poller(telegram, bot, Outbox(store, telegram), jobs, poll_timeout=1)
    return Pipeline(stack, store, poller, jobs)


async def close(pipeline: Pipeline) -> None:
    await pipeline.halt()
    await pipeline.jobs.cancel_all()
    bot = pipeline.poller.bot
    for client in (bot.telegram, bot.anthropic, bot.openai):
        await client.aclose()
    await pipeline.store.aclose()


@pytest.fixture
async def stack() -> AsyncIterator[SandboxStack]:
    async with SandboxStack(flood_limits=FloodLimits.off()) as running:
        yield running


@pytest.fixture
async def pipeline(stack: SandboxStack, tmp_path: Path) -> AsyncIterator[Pipeline]:
    built = await build(stack, tmp_path / "bot.db")
    built.start()
    yield built
    await close(built)


async def test_every_simulated_message_is_answered_exactly_once(pipeline: Pipeline) -> None:
    """40 messages (some voice notes) from 8 users each get exactly one reply from Anthropic."""
    users = pipeline.stack.users(
        users=8, rate=400, count=40, voice_share=0.2, on_line=lambda s: None
    )
    users.start()
    report = await users.wait_answered(timeout=60)
    await users.aclose()
    assert report.sent == 40 and report.exactly_once, report.summary()
    assert report.fallbacks == ()
    texts = {d.text for d in pipeline.stack.telegram.deliveries}
    assert all(t.startswith("anthropic echo: ") for t in texts)


async def test_anthropic_down_answers_from_openai(pipeline: Pipeline) -> None:
    """With Anthropic down, the user still gets an answer, from OpenAI."""
    pipeline.stack.anthropic.set_mode("down")
    pipeline.stack.telegram.push_text(chat_id=11, user_id=11, text="are you there")
    await async_wait_for(lambda: pipeline.stack.telegram.deliveries)
    assert pipeline.stack.telegram.deliveries[0].text == pipeline.stack.openai.reply_for(
        "are you there"
    )


async def test_both_down_gives_the_fallback_text(pipeline: Pipeline) -> None:
    """With both LLMs failing, the user gets the seed's fallback text, not silence."""
    pipeline.stack.anthropic.set_mode("errors", status=503)
    pipeline.stack.openai.set_mode("errors", status=500)
    pipeline.stack.telegram.push_text(chat_id=12, user_id=12, text="hello?")
    await async_wait_for(lambda: pipeline.stack.telegram.deliveries)
    assert pipeline.stack.telegram.deliveries[0].text == FALLBACK_TEXT


async def test_commands_and_history(pipeline: Pipeline) -> None:
    """/help answers the help text; /reset forgets the chat's history."""
    telegram = pipeline.stack.telegram
    telegram.push_text(chat_id=13, user_id=13, text="remember me")
    await async_wait_for(lambda: len(telegram.deliveries) == 1)
    assert [t.text for t in await pipeline.store.history(13)][:1] == ["remember me"]
    telegram.push_text(chat_id=13, user_id=13, text="/help")
    telegram.push_text(chat_id=13, user_id=13, text="/reset")
    await async_wait_for(lambda: len(telegram.deliveries) == 3)
    assert {d.text for d in telegram.deliveries[1:]} == {HELP_TEXT, RESET_TEXT}
    assert await pipeline.store.history(13) == []


async def test_a_redelivered_update_is_answered_once(pipeline: Pipeline) -> None:
    """The same update accepted twice (a Telegram redelivery) is answered once."""
    update = {
        "update_id": 900001,
        "message": {
            "message_id": 77,
            "chat": {"id": 14, "type": "private"},
            "from": {"id": 14},
            "date": 0,
            "text": "twice",
        },
    }
    assert await pipeline.poller.accept(update) is True
    assert await pipeline.poller.accept(update) is False
    await async_wait_for(lambda: pipeline.jobs.active == 0 and pipeline.stack.telegram.deliveries)
    assert [d.reply_to_message_id for d in pipeline.stack.telegram.deliveries] == [77]


async def test_journaled_updates_are_answered_after_a_restart(
    stack: SandboxStack, tmp_path: Path
) -> None:
    """Updates journaled but cut before their answer are answered once by the next run."""
    stack.anthropic.set_mode("hang")
    first = await build(stack, tmp_path / "bot.db")
    first.start()
    for i in range(5):
        stack.telegram.push_text(chat_id=100 + i, user_id=100 + i, text=f"m{i}")
    await async_wait_for(
        lambda: first.poller.accepted == 5 and stack.telegram.pending_update_count == 0
    )
    assert await first.jobs.cancel_all() == 5  # the worker dies mid-answer
    await close(first)
    assert stack.telegram.deliveries == []

    stack.anthropic.set_mode("ok")
    second = await build(stack, tmp_path / "bot.db")
    assert await second.poller.resume() == 5
    await async_wait_for(lambda: len(stack.telegram.deliveries) == 5)
    await async_wait_for(lambda: second.jobs.active == 0)
    assert sorted(d.chat_id for d in stack.telegram.deliveries) == [100, 101, 102, 103, 104]
    assert (await second.store.counts())["journaled"] == 0
    await close(second)
