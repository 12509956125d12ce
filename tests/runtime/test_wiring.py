"""The guard that joins a limiter and a breaker around every upstream call."""

from __future__ import annotations

import pytest

from khronos_cli.config import BREAKER_DEFAULTS, LIMITER_DEFAULTS, Rate, Secret
from khronos_cli.errors import CircuitOpenError, UpstreamError
from khronos_cli.resilience.breaker import CircuitBreaker
from khronos_cli.resilience.breaker.registry import not_an_outage
from khronos_cli.resilience.limiter.limiter import Limiter
from khronos_cli.runtime.wiring import guard
from khronos_cli.sandbox import FloodLimits, SandboxStack
from khronos_cli.upstream.telegram import TelegramClient
from tests.support import through


async def test_a_telegram_429_halts_the_limiter_and_holds_the_breaker() -> None:
    """Telegram's 429 retry_after halts the `telegram` limiter and holds `telegram-api` open, so
    the next send waits out the halt instead of flooding Telegram again."""
    breaker = CircuitBreaker(BREAKER_DEFAULTS["telegram-api"], ignore=not_an_outage)
    limiter = Limiter(LIMITER_DEFAULTS["telegram"])
    limits = FloodLimits(per_chat=None, per_group=None, per_bot=Rate(1, 2.0))
    async with (
        SandboxStack(flood_limits=limits) as stack,
        TelegramClient(
            Secret(stack.token), stack.telegram_base_url, guard=guard(breaker, limiter)
        ) as client,
    ):
        await client.send_message(1, "first")
        with pytest.raises(UpstreamError) as caught:  # the bot's 1 per 2 s is spent
            await client.send_message(5, "second")
        assert caught.value.status == 429 and caught.value.retry_after
        assert limiter.snapshot()["halted_for"] > 0
        assert breaker.snapshot()["state"] == "open"
        with pytest.raises(CircuitOpenError):  # straight to the breaker: held open
            await through(breaker, client.send_message, 6, "direct")
        await client.send_message(7, "third")  # waits out the halt, then goes through
        assert stack.telegram.flood_rejections == 1
        assert [d.chat_id for d in stack.telegram.deliveries] == [1, 7]
    await limiter.aclose()
    await breaker.aclose()


async def test_a_400_neither_trips_nor_halts() -> None:
    """Our own mistake (400) passes through the guard without tripping or halting anything."""
    breaker = CircuitBreaker(BREAKER_DEFAULTS["telegram-api"], ignore=not_an_outage)
    limiter = Limiter(LIMITER_DEFAULTS["telegram"])
    async with SandboxStack() as stack:
        stack.telegram.set_failure("errors", methods=["sendMessage"], status=400)
        async with TelegramClient(
            Secret(stack.token), stack.telegram_base_url, guard=guard(breaker, limiter)
        ) as client:
            for chat in range(10):
                with pytest.raises(UpstreamError):
                    await client.send_message(chat, "bad")
    assert breaker.snapshot()["state"] == "closed"
    assert breaker.snapshot()["stats"]["failures"] == 0
    assert limiter.snapshot()["halted_for"] == 0
    await limiter.aclose()
    await breaker.aclose()
