"""Building the worker's parts from settings: breakers, limiters, guards, clients, the store.

A **guard** (``upstream.base.Guard``) is how a call meets its resilience: the dependency's limiter
decides *when* it may start (queueing, rates, per-key groups), then its breaker decides *whether*
(open: rejected at once) and bounds *how long* (the breaker's timeout covers the call, never the
wait in the queue). An upstream 429 with a retry-after halts the limiter too, so nothing is sent
into a flood. The bot has its own fallback chain (Anthropic, then OpenAI, then the fallback text),
so guards use ``async with breaker`` and never the breaker's fallback.

Every client's transport is wrapped by the worker's one :class:`FaultInjector`, which
``khronos outage`` drives; the store consults it for ``database``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import httpx
from redis.asyncio import Redis

from khronos_cli.bot.bot import Bot
from khronos_cli.bot.jobs import JobTracker
from khronos_cli.bot.outbox import Outbox
from khronos_cli.bot.poller import Poller
from khronos_cli.bot.store import Store
from khronos_cli.config import Settings
from khronos_cli.errors import UpstreamError
from khronos_cli.resilience.breaker import CircuitBreaker
from khronos_cli.resilience.breakers import BreakerRegistry, build_breakers
from khronos_cli.resilience.limiter import Limiter
from khronos_cli.resilience.limiters import Limiters
from khronos_cli.upstream.base import Guard
from khronos_cli.upstream.faults import FaultInjector, FaultTransport
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient
from khronos_cli.upstream.telegram import TelegramClient

__all__ = ["Parts", "build", "guard"]

T = TypeVar("T")

DB_FILE = "khronos.db"


def guard(breaker: CircuitBreaker, limiter: Limiter | None = None) -> Guard:
    """Limiter first (wait your turn), then the breaker (fail fast, bounded time)."""

    async def through_breaker(attempt: Callable[[], Awaitable[T]]) -> T:
        async with breaker:
            return await attempt()

    async def run(
        attempt: Callable[[], Awaitable[T]],
        /,
        *,
        key: Hashable | None = None,
        priority: int = 5,
        timeout: float | None = None,
    ) -> T:
        try:
            if limiter is None:
                return await through_breaker(attempt)
            return await limiter.schedule(through_breaker, attempt, key=key, priority=priority)
        except UpstreamError as exc:
            if limiter is not None and exc.status == 429 and exc.retry_after:
                limiter.halt(exc.retry_after)
            raise

    return run


@dataclasses.dataclass
class Parts:
    """Everything the worker runs, built and wired but not started."""

    settings: Settings
    faults: FaultInjector
    breakers: BreakerRegistry
    limiters: Limiters
    telegram: TelegramClient
    anthropic: AnthropicClient
    openai: OpenAIClient
    store: Store
    bot: Bot
    outbox: Outbox
    jobs: JobTracker
    poller: Poller
    redis: Redis | None = None

    @property
    def clients(self) -> tuple[Any, ...]:
        return (self.telegram, self.anthropic, self.openai)


def _transport(faults: FaultInjector, dependency: str) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    inner = AiohttpTransport(limits=httpx.Limits(max_connections=100))
    return FaultTransport(inner, faults, dependency)


HEALTH = ("telegram-api", "anthropic-api", "openai-api", "database")


def _later(checks: dict[str, Callable[[], Awaitable[object]]], name: str) -> Callable[[], Any]:
    async def check() -> object:
        return await checks[name]()

    return check


async def build(settings: Settings, *, poll_timeout: int | None = None) -> Parts:
    """Build every part; on failure nothing is left open."""
    faults = FaultInjector()
    redis = None
    if settings.redis_url:  # short timeouts: a dead Redis must fail fast, never hang the bot
        redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    checks: dict[str, Callable[[], Awaitable[object]]] = {}  # filled once the clients exist
    breakers = build_breakers(settings, health_checks={n: _later(checks, n) for n in HEALTH})
    limiters = Limiters.build(settings.limiters, redis=redis)
    b, lim = breakers, limiters
    telegram_timeout = b["telegram-api"].settings.timeout
    telegram = TelegramClient(
        settings.telegram_token,
        settings.telegram_base_url,
        timeout=telegram_timeout,
        transport=_transport(faults, "telegram-api"),
        guard=guard(b["telegram-api"], lim["telegram"]),
        poll_guard=guard(b["telegram-api"]),
    )
    anthropic = AnthropicClient(
        settings.anthropic_api_key,
        settings.anthropic_base_url,
        model=settings.anthropic_model,
        timeout=b["anthropic-api"].settings.timeout,
        transport=_transport(faults, "anthropic-api"),
        guard=guard(b["anthropic-api"], lim["anthropic"]),
    )
    openai = OpenAIClient(
        settings.openai_api_key,
        settings.openai_base_url,
        model=settings.openai_model,
        timeout=b["openai-api"].settings.timeout,
        transport=_transport(faults, "openai-api"),
        guard=guard(b["openai-api"]),
        transcription_guard=guard(b["openai-api"], lim["whisper"]),
    )
    try:
        store = await Store.open(settings.state_dir / DB_FILE, faults=faults)
    except BaseException:
        for client in (telegram, anthropic, openai):
            await client.aclose()
        await limiters.aclose()
        await breakers.aclose()
        raise
    checks.update({
        "telegram-api": telegram.ping, "anthropic-api": anthropic.ping,
        "openai-api": openai.ping, "database": store.ping,
    })  # fmt: skip
    db_guard = guard(b["database"])
    bot = Bot(store, telegram, anthropic, openai, db_guard=db_guard)
    outbox = Outbox(store, telegram, db_guard=db_guard)
    jobs = JobTracker()
    # A long poll must end before the telegram-api breaker's timeout would cut it.
    poll = poll_timeout if poll_timeout is not None else max(1, int(telegram_timeout) - 1)
    poller = Poller(telegram, bot, outbox, jobs, poll_timeout=poll)
    return Parts(
        settings, faults, breakers, limiters, telegram, anthropic, openai, store, bot, outbox,
        jobs, poller, redis,
    )  # fmt: skip
