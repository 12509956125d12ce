"""The seed's four limiters (``telegram``, ``global``, ``anthropic``, ``whisper``), from config.

:meth:`Limiters.build` makes one :class:`Limiter` per ``LimiterSettings`` (DESIGN.md's defaults,
overridden by ``khronos.toml``), all in memory or all on one Redis. It also holds the Telegram
rules that are not numbers:

- ``getUpdates`` (and every other ``get*`` read) is never throttled: a throttled poller would
  delay every reply and can hit the 50 s long-poll limit (the Telegram client sends only
  ``send*`` calls through the limiter).
- Replies to users take priority over bulk sends (:data:`PRIORITY_REPLY` before
  :data:`PRIORITY_BULK`) when they compete for the bot's 30/s.
- A 429's ``parameters.retry_after`` (never the description text) halts the sends of its scope.
  Telegram's flood control is per chat, per group and per bot, and its 429 does not say which:
  a 429 halts the chat it answered, and :data:`FLOOD_CHATS` chats answered 429 within
  :data:`FLOOD_WINDOW` seconds halt every chat (:meth:`Limiters.telegram_429`).
- Telegram counts messages when they *arrive*; the ``telegram`` limiter adds a guard to each
  rate period so that the jitter between our decision and their clock cannot push a window over
  the limit: :data:`TELEGRAM_GUARD` (8 ms) in one process, :data:`TELEGRAM_REDIS_GUARD` (25 ms)
  when replicas share Redis (each replica adds its own scheduling delay). Measured with
  ``benchmarks/limiter.py`` on 2 cores: 8 ms keeps one process at 99.5 % of 30/s with no 1 s
  window over at the receiving server; four processes needed 25 ms for none over (97.7 %).
  A chat's own limits get :data:`TELEGRAM_KEY_GUARD` (50 ms): one stall of the process between
  two answers to one chat (a busy 2-core CI machine showed more than 8 ms) would otherwise earn
  that chat a 429 and a whole second's wait, while 50 ms more per second costs a chat nothing
  a user could see and leaves the bot's 30/s, where the budget is scarce, at its tight guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, Final, TypeVar

from khronos_cli.config import LIMITER_DEFAULTS, LimiterSettings
from khronos_cli.errors import ConfigError
from khronos_cli.resilience.limiter.backends import RedisRates
from khronos_cli.resilience.limiter.jobs import QueuedJob
from khronos_cli.resilience.limiter.limiter import Limiter
from khronos_cli.resilience.redis_client import Client, connect

__all__ = [
    "PRIORITY_BULK",
    "PRIORITY_REPLY",
    "TELEGRAM_GUARD",
    "TELEGRAM_KEY_GUARD",
    "TELEGRAM_REDIS_GUARD",
    "Limiters",
]

PRIORITY_REPLY: Final = 2
PRIORITY_BULK: Final = 7
TELEGRAM_GUARD: Final = 0.008  # seconds added to each Telegram rate period, one process
TELEGRAM_REDIS_GUARD: Final = 0.025  # ... when replicas share the budget through Redis
TELEGRAM_KEY_GUARD: Final = 0.05  # added to a chat's own periods (1/s, 20/min), either way
FLOOD_CHATS: Final = 3  # this many chats answered 429 ...
FLOOD_WINDOW: Final = 5.0  # ... within this many seconds: the whole bot is flooded
T = TypeVar("T")


class Limiters(Mapping[str, Limiter]):
    """The process's limiters by name, with their shared backend."""

    def __init__(
        self,
        limiters: Mapping[str, Limiter],
        redis: Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiters = dict(limiters)
        self._redis = redis
        self._clock = clock
        self._floods: dict[Hashable, float] = {}  # chat -> when Telegram last answered it 429

    @classmethod
    def build(
        cls,
        settings: Mapping[str, LimiterSettings] | None = None,
        *,
        redis_url: str | None = None,
        redis: Client | None = None,
        bot: str = "bot",
        namespace: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Limiters:
        """One limiter per settings entry (default: DESIGN.md's four), in memory or on Redis.

        A rate list pyrate-limiter cannot enforce raises ``ConfigError`` naming the limiter.
        """
        owned = connect(redis_url) if redis is None and redis_url else None
        client = redis or owned
        built: dict[str, Limiter] = {}
        for name, item in (settings or LIMITER_DEFAULTS).items():
            guard, key_guard = 0.0, None
            if name == "telegram":
                guard = TELEGRAM_GUARD if client is None else TELEGRAM_REDIS_GUARD
                key_guard = max(guard, TELEGRAM_KEY_GUARD)
            try:
                built[name] = Limiter(
                    item,
                    redis=client,
                    bot=bot,
                    namespace=namespace,
                    guard=guard,
                    key_guard=key_guard,
                    clock=clock,
                )
            except ValueError as exc:
                rates = [str(r) for r in (*item.rates, *item.group_rates, *item.global_rates)]
                expected = f"rates that loosen as the period grows ({exc})"
                raise ConfigError("limiters", f"limiters.{name}.rates", rates, expected) from exc
        return cls(built, owned, clock=clock or time.monotonic)

    def __getitem__(self, name: str) -> Limiter:
        return self._limiters[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._limiters)

    def __len__(self) -> int:
        return len(self._limiters)

    def share_replicas(self, count: Callable[[], int]) -> None:
        """Tell the Redis backends how many replicas share the budgets: without Redis each one
        keeps 1/count of them."""
        for limiter in self._limiters.values():
            backend = limiter.backend
            if isinstance(backend, RedisRates):
                backend.replicas = count

    def recovered(self) -> None:
        """Redis answers again (the caller saw it): leave local limits before the next decision."""
        for limiter in self._limiters.values():
            backend = limiter.backend
            if isinstance(backend, RedisRates):
                backend.degraded = False

    @property
    def degraded(self) -> bool:
        """Whether any limiter decides on local limits because Redis is unreachable."""
        return any(getattr(limiter.backend, "degraded", False) for limiter in self.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{name: snapshot}``, the body of ``GET /limiter/stats`` and ``khronos limiter``."""
        return {name: limiter.snapshot() for name, limiter in self._limiters.items()}

    def telegram_429(self, retry_after: float, chat_id: Hashable = None) -> str:
        """Telegram answered a send to ``chat_id`` with 429: halt that chat's sends for
        ``retry_after`` seconds, and every chat's when :data:`FLOOD_CHATS` chats were answered
        429 within :data:`FLOOD_WINDOW` seconds (or the call had no chat). Returns the scope
        halted: ``"chat"`` or ``"bot"``."""
        limiter = self["telegram"]
        if chat_id is None:
            limiter.halt(retry_after)
            return "bot"
        now = self._clock()
        self._floods[chat_id] = now
        for chat, at in list(self._floods.items()):
            if at < now - FLOOD_WINDOW:
                del self._floods[chat]
        limiter.halt(retry_after, scope=chat_id)
        if len(self._floods) >= FLOOD_CHATS:
            limiter.halt(retry_after)
            return "bot"
        return "chat"

    async def stop(self, *, drop_waiting: bool = False) -> dict[str, list[QueuedJob]]:
        """Stop every limiter (see ``Limiter.stop``); the jobs handed back, by limiter."""
        names = list(self._limiters)
        stops = [self._limiters[name].stop(drop_waiting=drop_waiting) for name in names]
        return dict(zip(names, await asyncio.gather(*stops), strict=True))

    async def aclose(self) -> None:
        """Stop everything at once and close the Redis client if this registry opened it."""
        for limiter in self._limiters.values():
            await limiter.aclose()
        if self._redis is not None:
            await self._redis.aclose()
