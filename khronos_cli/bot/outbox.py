"""Delivering the outbox: every reply is committed before it is sent, and marked after.

Messages go out **in order, per chat**: each chat with something to send has one sender task that
sends that chat's pending messages lowest outbox id first, one at a time, through the Telegram
client (its limiter and breaker). So the parts of a long reply arrive in order, and a later answer
never overtakes an earlier one. Chats do not wait for each other.

A job hands its freshly recorded reply to :meth:`Outbox.deliver` and waits until it is sent, or
until it is kept for later (the job then ends; the chat's sender keeps trying in the background).
What could not be sent (Telegram down, a 429 on that chat, the breaker open, the worker stopped)
stays in the outbox: the sender retries the chat's first message after a backoff (or Telegram's
``retry_after``), and the next start picks up what a stop left. An answer Telegram refuses for
good (400, 403: the user blocked the bot) is marked failed with the rest of its parts. A group
that became a supergroup (:class:`ChatMigratedError`) is moved, history and pending messages, to
its new chat id, and the message is sent there. A failure's text is kept in ``last_error`` only
after the scrubber the log uses has masked any secret in it.

A message Telegram accepted is never sent again by this process: when marking it sent fails (the
database is down) it is kept aside and marked later. The one window nobody can close: a crash
after Telegram accepted a send and before ``mark_sent`` committed sends that message once more on
the next start (DESIGN.md).

While sends fail because Telegram is unreachable (no answer, a 5xx, the breaker open),
:attr:`Outbox.unreachable` says since when and why; the next send that goes through clears it
(the alerts tell "Telegram was down for 4 min" from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from khronos_cli.bot.store import OutboxMessage, Store
from khronos_cli.errors import (
    CallTimeoutError,
    ChatMigratedError,
    CircuitOpenError,
    KhronosError,
    UpstreamError,
)
from khronos_cli.redaction import Scrubber
from khronos_cli.upstream.base import Guard, through
from khronos_cli.upstream.telegram import PRIORITY_BULK, PRIORITY_REPLY, TelegramClient

__all__ = ["Outbox"]

logger = logging.getLogger("khronos.outbox")

MAX_BACKOFF = 30.0
MAX_ERROR = 300  # characters of a send's error kept in ``outbox.last_error`` (scrubbed first)


@dataclass
class _Chat:
    """One chat's pending messages (a heap by outbox id), their waiters and their sender."""

    heap: list[tuple[int, OutboxMessage]] = field(default_factory=list)
    waiters: dict[int, asyncio.Future[bool]] = field(default_factory=dict)
    not_before: float = 0.0
    task: asyncio.Task[None] | None = None

    def waiter(self, outbox_id: int) -> asyncio.Future[bool]:
        """The future a caller awaits for ``outbox_id`` (a new one if the last was cancelled)."""
        future = self.waiters.get(outbox_id)
        if future is None or future.done():
            future = self.waiters[outbox_id] = asyncio.get_running_loop().create_future()
        return future

    def remove(self, ids: Iterable[int]) -> None:
        gone = set(ids)
        self.heap = [entry for entry in self.heap if entry[0] not in gone]
        heapq.heapify(self.heap)

    def settle(self, outcome: bool, ids: Iterable[int] | None = None) -> None:
        """Resolve the waiters of ``ids`` (default: every message still queued)."""
        for outbox_id in list(self.waiters) if ids is None else ids:
            future = self.waiters.pop(outbox_id, None)
            if future is not None and not future.done():
                future.set_result(outcome)


class Outbox:
    """Sends outbox rows through the Telegram client, in order per chat."""

    def __init__(
        self,
        store: Store,
        telegram: TelegramClient,
        *,
        db_guard: Guard | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        scrub: Scrubber | None = None,
    ) -> None:
        self.store = store
        self.telegram = telegram
        self._db_guard = db_guard
        self._scrub = scrub or Scrubber()  # what a failed send's error may quote (a token)
        self.interval = interval
        self.clock = clock
        self.sent = 0
        self.failed = 0
        self.migrations: set[tuple[int, int]] = set()  # (old, new) chat ids seen here
        self._chats: dict[int, _Chat] = {}
        self._known: set[int] = set()  # outbox ids queued in memory
        self._unmarked: dict[int, int | None] = {}  # accepted by Telegram, not yet marked sent
        self._finishing: set[int] | None = None  # ids finished while a reload reads the store
        self._reloading = asyncio.Lock()
        self._wake = asyncio.Event()
        self.unreachable: tuple[float, str] | None = None  # since (wall clock), why: Telegram

    # -- what jobs, the pump and the stop call --------------------------------------------------

    async def deliver(self, messages: Sequence[OutboxMessage]) -> bool:
        """Queue freshly recorded messages (one reply's parts) and wait for them: True once all
        are sent, False when they were kept for later or given up on."""
        if not messages:
            return True
        futures = self._enqueue(messages)
        if len(futures) == 1:  # most replies are one part: no gathering future around it
            return await futures[0]
        results = await asyncio.gather(*futures)
        return all(results)

    async def flush(self) -> int:
        """Queue every pending message of the store and wait until each chat has sent what it
        can now (a chat whose first message must wait for a backoff counts as done); returns
        how many were sent meanwhile."""
        await self._reload()
        futures = [
            chat.waiter(outbox_id) for chat in self._chats.values() for outbox_id, _ in chat.heap
        ]
        for chat_id, chat in self._chats.items():
            if chat.not_before > self.clock():
                chat.settle(False)
            self._ensure_sender(chat_id, chat)
        results = await asyncio.gather(*futures)
        return sum(1 for sent in results if sent)

    async def load(self) -> int:
        """Queue what the previous run left pending, without waiting; returns how many."""
        before = len(self._known)
        await self._reload()
        return len(self._known) - before

    def kick(self) -> None:
        """Wake the pump now (something new may be waiting)."""
        self._wake.set()

    async def run(self) -> None:
        """The safety net, until cancelled: mark what was sent but not yet marked, and queue any
        pending message that is not queued in memory."""
        while True:
            try:
                await self._mark_unmarked()
                await self._reload()
            except KhronosError as exc:
                logger.warning("outbox pump: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def aclose(self) -> None:
        """Stop every sender; what they had not sent stays pending in the store."""
        tasks = [chat.task for chat in self._chats.values() if chat.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for chat in self._chats.values():
            chat.settle(False)
        self._chats.clear()
        self._known.clear()

    async def pending(self) -> int:
        """How many messages are still waiting (kept for the next start)."""
        return len(await self.store.pending_outbox())

    @property
    def queued(self) -> int:
        """Messages queued in memory right now, over every chat."""
        return len(self._known)

    def oldest(self) -> float | None:
        """When the oldest message queued in memory was recorded (wall clock), or None."""
        heads = [chat.heap[0][1].created_at for chat in self._chats.values() if chat.heap]
        return min(heads, default=None)

    def queued_in(self, chat_id: int) -> int:
        """Messages queued for ``chat_id`` right now (the one being sent included)."""
        chat = self._chats.get(chat_id)
        return 0 if chat is None else len(chat.heap)

    # -- queues ---------------------------------------------------------------------------------

    def _enqueue(self, messages: Iterable[OutboxMessage]) -> list[asyncio.Future[bool]]:
        futures = []
        touched: dict[int, _Chat] = {}
        for message in messages:
            chat = self._chats.setdefault(message.chat_id, _Chat())
            if message.id not in self._known and message.id not in self._unmarked:
                self._known.add(message.id)
                heapq.heappush(chat.heap, (message.id, message))
            futures.append(chat.waiter(message.id))
            touched[message.chat_id] = chat
        for chat_id, chat in touched.items():
            self._ensure_sender(chat_id, chat)
        return futures

    def _ensure_sender(self, chat_id: int, chat: _Chat) -> None:
        if chat.task is None and chat.heap:
            chat.task = asyncio.get_running_loop().create_task(
                self._drain(chat_id, chat), name=f"outbox-chat-{chat_id}"
            )

    async def _reload(self) -> None:
        """Queue the store's pending messages that memory does not hold (the previous run's)."""
        async with self._reloading:
            self._finishing = set()
            try:
                pending = await through(self._db_guard, self.store.pending_outbox, 1000)
                finished = self._finishing
            finally:
                self._finishing = None
            fresh = [
                m
                for m in pending
                if m.id not in self._known and m.id not in self._unmarked and m.id not in finished
            ]
            if fresh:
                self._enqueue(fresh)

    def _finished(self, chat: _Chat, outbox_id: int, outcome: bool) -> None:
        self._known.discard(outbox_id)
        if self._finishing is not None:
            self._finishing.add(outbox_id)
        chat.settle(outcome, [outbox_id])

    # -- one chat's sender ----------------------------------------------------------------------

    async def _drain(self, chat_id: int, chat: _Chat) -> None:
        try:
            while chat.heap and self._chats.get(chat_id) is chat:
                wait = chat.not_before - self.clock()
                if wait > 0:
                    chat.settle(False)  # the jobs waiting here end; the sender keeps trying
                    await asyncio.sleep(wait)
                    continue
                await self._send(chat_id, chat, chat.heap[0][1])
        finally:
            chat.task = None
            if not chat.heap and self._chats.get(chat_id) is chat:
                del self._chats[chat_id]

    async def _send(self, chat_id: int, chat: _Chat, message: OutboxMessage) -> None:
        priority = PRIORITY_REPLY if message.update_id is not None else PRIORITY_BULK
        try:
            sent = await self.telegram.send_message(
                message.chat_id,
                message.text,
                reply_to_message_id=message.reply_to_message_id,
                priority=priority,
            )
        except ChatMigratedError as exc:
            await self._migrate(chat_id, chat, exc.new_chat_id)
            return
        except KhronosError as exc:
            await self._failed(chat, message, exc)
            return
        chat.remove([message.id])
        chat.not_before = 0.0
        self.unreachable = None
        self.sent += 1
        telegram_id = sent.get("message_id") if isinstance(sent, dict) else None
        try:
            await through(self._db_guard, self.store.mark_sent, message.id, telegram_id)
        except KhronosError as exc:
            logger.warning(
                "message %d was sent; marking it failed (%s): kept aside", message.id, exc
            )
            self._unmarked[message.id] = telegram_id
        self._finished(chat, message.id, True)

    async def _failed(self, chat: _Chat, message: OutboxMessage, exc: KhronosError) -> None:
        final = isinstance(exc, UpstreamError) and not exc.is_outage
        down = isinstance(exc, CallTimeoutError | CircuitOpenError) or (
            isinstance(exc, UpstreamError) and (exc.status is None or exc.status >= 500)
        )
        if down and self.unreachable is None:  # until a send goes through again
            self.unreachable = (time.time(), self._scrub(str(exc))[:MAX_ERROR])
        try:
            attempts = await through(
                self._db_guard,
                self.store.mark_failed,
                message.id,
                self._scrub(str(exc))[:MAX_ERROR],
                final=final,
            )
        except KhronosError as store_error:
            logger.warning("message %d: could not record the failure: %s", message.id, store_error)
            attempts = message.attempts + 1
            if final:  # retried as a transient failure until the store can record it
                final, exc = False, store_error
        if final:
            self.failed += 1
            logger.warning("gave up on message %d to chat %d: %s", message.id, message.chat_id, exc)
            dropped = [
                outbox_id
                for outbox_id, queued in chat.heap
                if outbox_id == message.id
                or (message.update_id is not None and queued.update_id == message.update_id)
            ]
            chat.remove(dropped)
            for outbox_id in dropped:
                self._finished(chat, outbox_id, False)
            return
        chat.remove([message.id])
        heapq.heappush(chat.heap, (message.id, replace(message, attempts=attempts)))
        wait = getattr(exc, "retry_after", None) or min(MAX_BACKOFF, 2.0 ** min(attempts, 5))
        chat.not_before = self.clock() + float(wait)
        logger.info("message %d kept in the outbox (attempt %d): %s", message.id, attempts, exc)

    async def _migrate(self, chat_id: int, chat: _Chat, new_chat_id: int) -> None:
        """Telegram says the group is now the supergroup ``new_chat_id``: move it there."""
        try:
            moved = await through(self._db_guard, self.store.migrate_chat, chat_id, new_chat_id)
        except KhronosError as exc:
            logger.warning("could not move chat %d to %d: %s", chat_id, new_chat_id, exc)
            chat.not_before = self.clock() + 1.0
            return
        self.migrations.add((chat_id, new_chat_id))
        logger.info("chat %d became supergroup %d: moved %s", chat_id, new_chat_id, moved)
        del self._chats[chat_id]
        target = self._chats.setdefault(new_chat_id, _Chat())
        for outbox_id, message in chat.heap:
            heapq.heappush(target.heap, (outbox_id, replace(message, chat_id=new_chat_id)))
        target.waiters.update(chat.waiters)
        chat.heap.clear()
        chat.waiters.clear()
        self._ensure_sender(new_chat_id, target)

    async def _mark_unmarked(self) -> None:
        for outbox_id, telegram_id in list(self._unmarked.items()):
            await through(self._db_guard, self.store.mark_sent, outbox_id, telegram_id)
            del self._unmarked[outbox_id]
