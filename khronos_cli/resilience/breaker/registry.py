"""The registry of khronos's circuit breakers: the seed's four, wired the way DESIGN.md says.

:func:`build_breakers` turns ``Settings.breakers`` (name -> :class:`BreakerSettings`, DESIGN.md's
defaults overridden per breaker by ``khronos.toml``) into a :class:`BreakerRegistry`. Each seed
breaker gets the classification its dependency needs:

* ``anthropic-api``, ``openai-api``, ``openai-transcription``: a 4xx :class:`UpstreamError` is
  ignored; every other error fails.
* ``telegram-api``, ``telegram-updates``: the same, and Telegram's 429 is ignored too.
* ``database`` and any other: every exception fails.

Fallbacks are the bot's (Anthropic, then OpenAI, then the fallback text; an unsent reply stays in
the outbox); it tells the breaker with ``record_fallback``, the ``fb`` column.

A 4xx (our own mistake: bad request, bad key) says nothing about the dependency's health, so it
neither trips nor heals a breaker. An upstream 429 or 503 with a retry-after holds the breaker
open until that deadline — except Telegram's 429, which is flood control on one chat, a group or
the bot (the ``telegram`` limiter halts that scope), never a sign that Telegram is down: for
``telegram-api`` and ``telegram-updates`` a 429 is neither a failure nor a hold. The breakers
``telegram-updates`` (getUpdates alone, sized to the long poll) and ``openai-transcription``
(voice notes, so one long note cannot open the breaker every chat's fallback needs) are
classified like their API's. Breakers named in the config but not in the seed are plain breakers.

The registry owns the storage it builds (memory, or Redis when ``redis_url`` is set) and the
breakers' lifecycle: ``await registry.startup()`` loads shared state and starts health checks,
``await registry.aclose()`` stops them and closes the storage. ``registry.snapshot()`` is the
``{name: snapshot}`` object that ``khronos breakers --json`` and ``GET /breakers/status`` print.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from khronos_cli.config import BREAKER_DEFAULTS, BreakerSettings, Settings
from khronos_cli.errors import UpstreamError
from khronos_cli.resilience.breaker.breaker import CircuitBreaker
from khronos_cli.resilience.breaker.storage import (
    BreakerStorage,
    MemoryBreakerStorage,
    RedisBreakerStorage,
)

__all__ = ["BreakerRegistry", "build_breakers", "not_a_telegram_outage", "not_an_outage"]

_HTTP_BREAKERS = ("anthropic-api", "openai-api", "openai-transcription")
_TELEGRAM_BREAKERS = ("telegram-api", "telegram-updates")


def not_an_outage(error: BaseException) -> bool:
    """An :class:`UpstreamError` caused by us (400, 401, 403, 404): ignored by the breaker."""
    return isinstance(error, UpstreamError) and not error.is_outage


def not_a_telegram_outage(error: BaseException) -> bool:
    """As :func:`not_an_outage`, and Telegram's 429 too: flood control, not an outage."""
    return not_an_outage(error) or (isinstance(error, UpstreamError) and error.status == 429)


class BreakerRegistry(Mapping[str, CircuitBreaker]):
    """Breakers by name, with one storage and one lifecycle."""

    def __init__(self, breakers: Mapping[str, CircuitBreaker], storage: BreakerStorage) -> None:
        self._breakers = dict(breakers)
        self.storage = storage

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def __len__(self) -> int:
        return len(self._breakers)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{name: breaker.snapshot()}``, JSON-ready."""
        return {name: breaker.snapshot() for name, breaker in self._breakers.items()}

    async def startup(self) -> None:
        for breaker in self._breakers.values():
            await breaker.startup()

    async def aclose(self) -> None:
        for breaker in self._breakers.values():
            await breaker.aclose()
        await self.storage.aclose()


def build_breakers(
    settings: Settings | Mapping[str, BreakerSettings] | None = None,
    *,
    storage: BreakerStorage | None = None,
    redis_url: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    health_checks: Mapping[str, Callable[[], Awaitable[object]]] | None = None,
) -> BreakerRegistry:
    """The seed's four breakers (plus any other the config names) from settings.

    ``settings`` is a :class:`Settings` (its ``breakers`` and ``redis_url`` are used), a mapping
    name -> :class:`BreakerSettings`, or ``None`` for DESIGN.md's defaults. ``storage`` wins over
    ``redis_url``; without either, state lives in memory.
    """
    if isinstance(settings, Settings):
        redis_url = redis_url or settings.redis_url
        table: Mapping[str, BreakerSettings] = settings.breakers
    else:
        table = settings if settings is not None else BREAKER_DEFAULTS
    if storage is None:
        storage = RedisBreakerStorage.from_url(redis_url) if redis_url else MemoryBreakerStorage()
    checks = health_checks or {}
    breakers = {}
    for name, breaker_settings in table.items():
        telegram = name in _TELEGRAM_BREAKERS
        http = name in _HTTP_BREAKERS
        breakers[name] = CircuitBreaker(
            breaker_settings,
            storage=storage,
            clock=clock,
            ignore=not_a_telegram_outage if telegram else not_an_outage if http else (),
            health_check=checks.get(name),
        )
    return BreakerRegistry(breakers, storage)
