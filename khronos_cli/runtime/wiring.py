"""Building the worker's parts from settings: breakers, limiters, guards, clients, the store.

A **guard** (``upstream.base.Guard``) is how a call meets its resilience: the dependency's limiter
decides *when* it may start (queueing, rates, per-key groups), then its breaker decides *whether*
(open: rejected at once) and bounds *how long* (the breaker's timeout covers the call, never the
wait in the queue). An upstream 429 with a retry-after halts the limiter too, so nothing is sent
into a flood: the LLMs' 429 is account-wide and halts the whole limiter; Telegram's halts the
chat it answered, and the whole bot only when several chats are refused at once
(``Limiters.telegram_429``). The bot has its own fallback chain (Anthropic, then OpenAI, then the
fallback text), so guards use ``async with breaker`` and never the breaker's fallback.

Which breaker guards what: sends and files ``telegram-api`` (5 s); ``getUpdates`` its own
``telegram-updates``, sized to the long poll and never behind the limiter; chat completions
``anthropic-api`` and ``openai-api``, with timeouts that fit their output caps; voice notes
``openai-transcription``, so a long note never opens the breaker every chat's fallback needs.

Every client's transport is wrapped by the worker's one :class:`FaultInjector`, which
``khronos outage`` drives; the store consults it for ``database``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import httpx

from khronos_cli import statedir
from khronos_cli.bot.bot import Bot
from khronos_cli.bot.failover import Hedge
from khronos_cli.bot.jobs import JobTracker
from khronos_cli.bot.outbox import Outbox
from khronos_cli.bot.poller import Poller
from khronos_cli.bot.store import Store
from khronos_cli.config import Settings
from khronos_cli.errors import UpstreamError
from khronos_cli.redaction import Scrubber
from khronos_cli.resilience.breaker import CircuitBreaker
from khronos_cli.resilience.breaker.registry import BreakerRegistry, build_breakers
from khronos_cli.resilience.breaker.storage import RedisBreakerStorage
from khronos_cli.resilience.limiter.jobs import PRIORITY_DEFAULT
from khronos_cli.resilience.limiter.limiter import Limiter
from khronos_cli.resilience.limiter.registry import Limiters
from khronos_cli.resilience.redis_client import Client, connect, verify
from khronos_cli.upstream.base import Guard
from khronos_cli.upstream.faults import FaultInjector
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient
from khronos_cli.upstream.telegram import TelegramClient

__all__ = ["Parts", "build", "close_parts", "guard"]

T = TypeVar("T")


def guard(
    breaker: CircuitBreaker,
    limiter: Limiter | None = None,
    *,
    on_429: Callable[[float, Hashable | None], object] | None = None,
) -> Guard:
    """Limiter first (wait your turn), then the breaker (fail fast, bounded time). A 429 with a
    retry-after calls ``on_429(seconds, key)``, or halts the whole limiter."""

    async def through_breaker(attempt: Callable[[], Awaitable[T]]) -> T:
        async with breaker:
            return await attempt()

    async def run(
        attempt: Callable[[], Awaitable[T]],
        /,
        *,
        key: Hashable | None = None,
        priority: int = PRIORITY_DEFAULT,
    ) -> T:
        try:
            if limiter is None:
                return await through_breaker(attempt)
            return await limiter.schedule(through_breaker, attempt, key=key, priority=priority)
        except UpstreamError as exc:
            if exc.status == 429 and exc.retry_after:
                if on_429 is not None:
                    on_429(exc.retry_after, key)
                elif limiter is not None:
                    limiter.halt(exc.retry_after)
            raise

    return run


def hedge(settings: Settings) -> Hedge | None:
    """``[bot] hedge_after``: when a slow Anthropic makes the bot ask OpenAI too (None: never)."""
    after = settings.bot.hedge_after
    if after is None:
        return None
    return Hedge(floor=after, ceiling=settings.breakers["anthropic-api"].timeout)


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
    redis: Client | None = None

    @property
    def clients(self) -> tuple[Any, ...]:
        return (self.telegram, self.anthropic, self.openai)


def _transport(faults: FaultInjector, dependency: str) -> httpx.AsyncBaseTransport:
    from khronos_cli.upstream.transport import FaultTransport, Wire

    return FaultTransport(Wire(limits=httpx.Limits(max_connections=100)), faults, dependency)


HEALTH = {  # breaker -> the health check it uses
    "telegram-api": "telegram",
    "telegram-updates": "telegram",
    "anthropic-api": "anthropic",
    "openai-api": "openai",
    "openai-transcription": "openai",
    "database": "database",
}


def _later(checks: dict[str, Callable[[], Awaitable[object]]], name: str) -> Callable[[], Any]:
    async def check() -> object:
        return await checks[name]()

    return check


async def build(settings: Settings, *, poll_timeout: int | None = None) -> Parts:
    """Build every part; on failure nothing is left open."""
    faults = FaultInjector()
    redis = None
    if settings.redis_url:  # one client (server, Sentinel or Cluster) for breakers, limiters,
        redis = connect(settings.redis_url)  # replicas; refused credentials or ACL: exit 78
        try:
            await verify(redis, settings.redis_namespace)
        except BaseException:
            await redis.aclose()
            raise
    scrub = Scrubber(settings.secrets)  # the log's too: what an upstream says may quote one
    checks: dict[str, Callable[[], Awaitable[object]]] = {}  # filled once the clients exist
    health = {name: _later(checks, check) for name, check in HEALTH.items()}
    namespace = settings.redis_namespace  # one bot's keys, apart from any other bot's
    storage = None if redis is None else RedisBreakerStorage(redis, prefix=namespace)
    breakers = build_breakers(settings, storage=storage, health_checks=health)
    limiters = Limiters.build(settings.limiters, redis=redis, namespace=namespace)
    b, lim = breakers, limiters
    telegram_timeout = b["telegram-api"].settings.timeout
    telegram = TelegramClient(
        settings.telegram_token,
        settings.telegram_base_url,
        timeout=telegram_timeout,
        transport=_transport(faults, "telegram-api"),
        guard=guard(b["telegram-api"], lim["telegram"], on_429=limiters.telegram_429),
        poll_guard=guard(b["telegram-updates"]),
        read_guard=guard(b["telegram-api"]),
        scrub=scrub,
    )
    anthropic = AnthropicClient(
        settings.anthropic_api_key,
        settings.anthropic_base_url,
        model=settings.anthropic_model,
        max_tokens=settings.bot.anthropic_max_tokens,
        timeout=b["anthropic-api"].settings.timeout,
        first_byte_timeout=settings.bot.anthropic_first_byte_timeout,
        stall_timeout=settings.bot.anthropic_stall_timeout,
        transport=_transport(faults, "anthropic-api"),
        guard=guard(b["anthropic-api"], lim["anthropic"]),
        scrub=scrub,
    )
    openai = OpenAIClient(
        settings.openai_api_key,
        settings.openai_base_url,
        model=settings.openai_model,
        max_tokens=settings.bot.openai_max_tokens,
        timeout=max(b["openai-api"].settings.timeout, b["openai-transcription"].settings.timeout),
        first_byte_timeout=settings.bot.openai_first_byte_timeout,
        stall_timeout=settings.bot.openai_stall_timeout,
        transport=_transport(faults, "openai-api"),
        guard=guard(b["openai-api"]),
        transcription_guard=guard(b["openai-transcription"], lim["whisper"]),
        scrub=scrub,
    )
    try:
        store = await Store.open(settings.state_dir / statedir.DB_FILE, faults=faults)
    except BaseException:
        for client in (telegram, anthropic, openai):
            await client.aclose()
        await limiters.aclose()
        await breakers.aclose()
        if redis is not None:
            await redis.aclose()
        raise
    checks.update(
        telegram=telegram.ping, anthropic=anthropic.ping, openai=openai.ping, database=store.ping
    )
    db_guard = guard(b["database"])

    def may_type(chat_id: int) -> bool:
        """A chat action is a hint: never into an unhealthy Telegram or a halted chat."""
        return b["telegram-api"].state == "closed" and not lim["telegram"].halted(chat_id)

    bot = Bot(
        store,
        telegram,
        anthropic,
        openai,
        db_guard=db_guard,
        history_turns=settings.bot.history_turns,
        groups=settings.bot.groups,
        may_type=may_type,
        on_fallback=lambda name, error: b[name].record_fallback(error),
        hedge=hedge(settings),
    )
    outbox = Outbox(store, telegram, db_guard=db_guard, scrub=scrub)
    jobs = JobTracker()
    poll = poll_timeout if poll_timeout is not None else int(settings.bot.poll_timeout)
    poller = Poller(telegram, bot, outbox, jobs, poll_timeout=poll)
    return Parts(
        settings,
        faults,
        breakers,
        limiters,
        telegram,
        anthropic,
        openai,
        store,
        bot,
        outbox,
        jobs,
        poller,
        redis,
    )


async def close_parts(parts: Parts) -> None:
    """Close every part, quietly (a start that failed: whatever was opened)."""
    for client in parts.clients:
        with contextlib.suppress(Exception):
            await client.aclose()
    with contextlib.suppress(Exception):
        await parts.store.aclose()
    with contextlib.suppress(Exception):
        await parts.limiters.aclose()
    with contextlib.suppress(Exception):
        await parts.breakers.aclose()
    if parts.redis is not None:
        with contextlib.suppress(Exception):
            await parts.redis.aclose()
