"""Delivering the outbox: every reply is committed before it is sent, and marked after.

A job hands its freshly recorded reply to :meth:`Outbox.deliver`; anything that could not be sent
(Telegram down, a 429, the breaker open, the worker stopped) stays in the outbox and the pump
(:meth:`Outbox.run`) retries it with a backoff, including what a previous run left behind. An
answer Telegram refuses for good (400, 403: the chat is gone, the user blocked the bot) is marked
failed and not retried. The one window nobody can close: a crash after Telegram accepted a send
and before ``mark_sent`` committed sends that message once more on the next start (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from khronos_cli.bot.store import OutboxMessage, Store
from khronos_cli.errors import KhronosError, UpstreamError
from khronos_cli.upstream.base import Guard, through
from khronos_cli.upstream.telegram import PRIORITY_BULK, PRIORITY_REPLY, TelegramClient

__all__ = ["Outbox"]

logger = logging.getLogger("khronos.outbox")

MAX_BACKOFF = 30.0


class Outbox:
    """Sends outbox rows through the Telegram client (its limiter and breaker)."""

    def __init__(
        self,
        store: Store,
        telegram: TelegramClient,
        *,
        db_guard: Guard | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.telegram = telegram
        self._db_guard = db_guard
        self.interval = interval
        self.clock = clock
        self.sent = 0
        self.failed = 0
        self._in_flight: set[int] = set()
        self._not_before: dict[int, float] = {}
        self._wake = asyncio.Event()

    async def deliver(self, message: OutboxMessage) -> bool:
        """Send one message; True once Telegram accepted it and it is marked sent."""
        if message.id in self._in_flight:
            return False
        self._in_flight.add(message.id)
        try:
            priority = PRIORITY_REPLY if message.update_id is not None else PRIORITY_BULK
            try:
                sent = await self.telegram.send_message(
                    message.chat_id,
                    message.text,
                    reply_to_message_id=message.reply_to_message_id,
                    priority=priority,
                )
            except KhronosError as exc:
                await self._failed(message, exc)
                return False
            await through(self._db_guard, self.store.mark_sent, message.id, sent.get("message_id"))
            self._not_before.pop(message.id, None)
            self.sent += 1
            return True
        finally:
            self._in_flight.discard(message.id)

    async def _failed(self, message: OutboxMessage, exc: KhronosError) -> None:
        final = isinstance(exc, UpstreamError) and not exc.is_outage
        attempts = await through(
            self._db_guard, self.store.mark_failed, message.id, str(exc)[:300], final=final
        )
        if final:
            self.failed += 1
            logger.warning("gave up on message %d to chat %d: %s", message.id, message.chat_id, exc)
            return
        wait = getattr(exc, "retry_after", None) or min(MAX_BACKOFF, 2.0 ** min(attempts, 5))
        self._not_before[message.id] = self.clock() + float(wait)
        logger.info("message %d kept in the outbox (attempt %d): %s", message.id, attempts, exc)

    async def flush(self) -> int:
        """Try every pending message that is due; returns how many were sent."""
        now = self.clock()
        due = [
            m
            for m in await through(self._db_guard, self.store.pending_outbox, 500)
            if m.id not in self._in_flight and self._not_before.get(m.id, 0.0) <= now
        ]
        results = await asyncio.gather(*(self.deliver(m) for m in due), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, KhronosError):
                raise result
        return sum(1 for r in results if r is True)

    def kick(self) -> None:
        """Wake the pump now (something new may be waiting)."""
        self._wake.set()

    async def run(self) -> None:
        """Retry pending messages until cancelled."""
        while True:
            try:
                await self.flush()
            except KhronosError as exc:
                logger.warning("outbox pump: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def pending(self) -> int:
        """How many messages are still waiting (kept for the next start)."""
        return len(await self.store.pending_outbox())
