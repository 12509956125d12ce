"""The answer chain against the sandbox's LLM stand-ins: failover, and hedging a hanging API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from khronos_cli.bot.failover import Failover, Hedge
from khronos_cli.bot.messages import FALLBACK_TEXT
from khronos_cli.config import Secret
from khronos_cli.sandbox import FloodLimits, SandboxStack
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient, Turn

TURNS: list[Turn] = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def stack() -> AsyncIterator[SandboxStack]:
    async with SandboxStack(flood_limits=FloodLimits.off(), llm_latency=0.0) as running:
        yield running


@pytest.fixture
async def chain(stack: SandboxStack) -> AsyncIterator[tuple[Failover, list[str]]]:
    anthropic = AnthropicClient(
        Secret(stack.anthropic_api_key), stack.anthropic_base_url, timeout=30
    )
    openai = OpenAIClient(Secret(stack.openai_api_key), stack.openai_base_url)
    fallbacks: list[str] = []
    failover = Failover(
        anthropic,
        openai,
        system_prompt="be brief",
        answered=dict.fromkeys(("anthropic", "openai", "fallback"), 0),
        hedge=Hedge(floor=0.3),
        on_fallback=lambda breaker, error: fallbacks.append(breaker),
    )
    yield failover, fallbacks
    await failover.aclose()
    await anthropic.aclose()
    await openai.aclose()


async def test_a_hanging_anthropic_is_hedged_by_openai(
    stack: SandboxStack, chain: tuple[Failover, list[str]]
) -> None:
    """Anthropic accepts and never answers: OpenAI answers once the hedge delay has passed (not
    after Anthropic's 30 s timeout), counted as Anthropic's fallback; Anthropic's call goes on
    in the background until the chain is closed."""
    failover, fallbacks = chain
    stack.anthropic.set_mode("hang")
    reply = await failover.ask(TURNS, key=1)
    assert reply.answered_by == "openai" and reply.text.startswith("openai echo")
    assert failover.slow_calls == 1  # OpenAI answered while Anthropic's call was still open
    assert fallbacks == ["anthropic-api"] and failover.hedge.hedged == 1
    assert failover.answered["openai"] == 1
    await failover.aclose()
    assert failover.slow_calls == 0


async def test_a_quick_anthropic_is_never_hedged(
    stack: SandboxStack, chain: tuple[Failover, list[str]]
) -> None:
    """Answers within the hedge delay come from Anthropic alone: OpenAI is never asked."""
    failover, fallbacks = chain
    for _ in range(5):
        reply = await failover.ask(TURNS, key=1)
        assert reply.answered_by == "anthropic"
    assert failover.hedge.hedged == 0 and fallbacks == []
    assert not any(stack.openai.stats()["requests"].values())


async def test_both_down_is_the_fallback_text(
    stack: SandboxStack, chain: tuple[Failover, list[str]]
) -> None:
    """Anthropic and OpenAI both failing: the fallback text, both counted as fallbacks."""
    failover, fallbacks = chain
    stack.anthropic.set_mode("errors", status=503)
    stack.openai.set_mode("errors", status=503)
    reply = await failover.ask(TURNS, key=1)
    assert (reply.text, reply.answered_by) == (FALLBACK_TEXT, "fallback")
    assert fallbacks == ["anthropic-api", "openai-api"]


async def test_the_hedge_delay_follows_the_answers_seen() -> None:
    """Three times the p90 of recent answers, at least the floor, never past the ceiling."""
    hedge = Hedge(floor=3.0, factor=3.0, ceiling=30.0)
    assert hedge.delay() == 3.0
    for seconds in [0.5] * 90 + [4.0] * 10:
        hedge.observe(seconds)
    assert hedge.delay() == pytest.approx(12.0)
    for _ in range(100):
        hedge.observe(20.0)
    assert hedge.delay() == 30.0


async def test_a_cancelled_ask_cancels_its_calls(
    stack: SandboxStack, chain: tuple[Failover, list[str]]
) -> None:
    """A job cancelled while both providers are asked leaves no call running."""
    failover, _ = chain
    stack.anthropic.set_mode("hang")
    stack.openai.set_mode("hang")
    task = asyncio.create_task(failover.ask(TURNS, key=1))
    await asyncio.sleep(0)  # let it start; the hedge then waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failover.slow_calls == 0
