"""Taking updates in: long polling (or webhook deliveries), journal first, answer after.

The invariant (DESIGN.md, "How nothing is lost"): the ``getUpdates`` offset moves past an update
only once it is journaled in SQLite (committed). If journaling fails (the database is down or its
breaker open), the offset stays and Telegram keeps the updates. A journaled update becomes a job;
a job that fails or is cut leaves it journaled, and the journal pump (and the next start) picks it
up again. ``Store.journal`` refuses ids it has seen, so a redelivered update is answered once.

Polling starts clean, as python-telegram-bot does: ``getMe`` (the bot learns its username, which
group messages address) and ``deleteWebhook`` keeping the pending updates (a token that once had a
webhook gets nothing but 409 from ``getUpdates``). Telegram's two 409s mean different things and
are named apart in :attr:`Poller.problem` (shown by ``khronos status``) and the log, with what
to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from khronos_cli.bot.bot import Bot
from khronos_cli.bot.jobs import JobTracker
from khronos_cli.bot.outbox import Outbox
from khronos_cli.errors import ClaimPendingError, KhronosError, UpstreamError
from khronos_cli.upstream.telegram import TelegramClient

__all__ = ["ClaimPendingError", "Claims", "Poller"]

logger = logging.getLogger("khronos.poller")

WEBHOOK_ACTIVE = (
    "Telegram has a webhook set for this token, so getUpdates gets 409: another deployment runs "
    "in webhook mode, or set one since this start. Stop it, or run this one with "
    'telegram.mode = "webhook"; khronos removes a leftover webhook when it starts polling.'
)
OTHER_POLLER = (
    "Another process polls this token (Telegram ended our getUpdates with 409 'terminated by "
    "other getUpdates request'): stop the other bot instance, or run both as replicas on one Redis."
)


class Claims(Protocol):
    """Shared ownership of update ids across replicas (``runtime.replicas.Replicas``)."""

    async def claim(self, update_id: int) -> str: ...
    async def reclaim(self, update_id: int) -> str: ...
    async def own(self, update_id: int) -> None: ...


class Poller:
    """Accepts updates (from getUpdates or the webhook) and runs one job per update."""

    def __init__(
        self,
        telegram: TelegramClient,
        bot: Bot,
        outbox: Outbox,
        jobs: JobTracker,
        *,
        poll_timeout: int = 30,
        retry_interval: float = 2.0,
        max_backoff: float = 30.0,
        claims: Claims | None = None,
    ) -> None:
        self.telegram = telegram
        self.bot = bot
        self.outbox = outbox
        self.jobs = jobs
        self.poll_timeout = poll_timeout
        self.retry_interval = retry_interval
        self.max_backoff = max_backoff
        self.claims = claims
        self.offset: int | None = None
        self.accepted = 0
        self.duplicates = 0
        self.problem: str | None = None  # why polling does not work right now, for the operator
        self.prepared = False
        self._working: set[int] = set()
        self._taken: set[int] = set()  # journaled updates this process knows its claims own

    async def accept(self, update: dict[str, Any]) -> bool:
        """Journal one update and start its job; False if it was seen before.

        Raises when the journal cannot be written: the caller must then not confirm the update
        (no offset move, or a non-2xx answer to a webhook delivery).
        """
        update_id = int(update["update_id"])
        chat_id = _chat_id(update)
        if self.claims is not None:
            claim = await self.claims.claim(update_id)
            if claim == "owned":  # another replica journaled it: answered there
                self.duplicates += 1
                return False
            if claim == "pending":
                raise ClaimPendingError(f"update {update_id} is being taken by another replica")
        fresh = await self.bot.db(self.bot.store.journal, update_id, chat_id, update)
        if self.claims is not None:
            await self.claims.own(update_id)
            self._taken.add(update_id)
        return self._journaled(update_id, chat_id, update, fresh)

    def _journaled(self, update_id: int, chat_id: int, update: dict[str, Any], fresh: bool) -> bool:
        """Count a journaled update, and start its job when it is new; returns ``fresh``."""
        if not fresh:
            self.duplicates += 1
            return False
        self.accepted += 1
        self._start(update_id, chat_id, update)
        return True

    async def _accept_all(self, updates: list[dict[str, Any]]) -> None:
        """Journal a poll's updates and start their jobs, moving the offset past each one
        journaled. Alone, a poll of several is one store call (one transaction). When that
        fails, or with replicas (each update is claimed first), each update is journaled on its
        own and the offset moves past the journaled prefix: what can be journaled is, and the
        ``database`` breaker counts each failure, as it would have counted each update."""
        if self.claims is None and len(updates) > 1:
            taken = [(int(u["update_id"]), _chat_id(u), u) for u in updates]
            try:
                fresh = await self.bot.db(self.bot.store.journal_many, taken)
            except KhronosError:
                pass
            else:
                for (update_id, chat_id, update), new in zip(taken, fresh, strict=True):
                    self._journaled(update_id, chat_id, update, new)
                self.offset = taken[-1][0] + 1
                return
        results = await asyncio.gather(*map(self.accept, updates), return_exceptions=True)
        for update, result in zip(updates, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            self.offset = int(update["update_id"]) + 1

    def _start(self, update_id: int, chat_id: int, payload: dict[str, Any]) -> None:
        if update_id in self._working:
            return
        self._working.add(update_id)
        self.jobs.spawn(self._job(update_id, chat_id, payload), name=f"update-{update_id}")

    async def _job(self, update_id: int, chat_id: int, payload: dict[str, Any]) -> None:
        try:
            messages = await self.bot.process(update_id, chat_id, payload)
            await self.outbox.deliver(messages)
        finally:
            self._working.discard(update_id)

    async def resume(self) -> int:
        """Start a job for every journaled update without an answer (at start, and by the pump)."""
        pending = await self.bot.db(self.bot.store.pending_updates, 500)
        fresh = [p for p in pending if p.update_id not in self._working]
        if self.claims is not None:  # replicas: only what this journal's claims allow
            self._taken.intersection_update(p.update_id for p in pending)
            verdicts = await asyncio.gather(*(self._ours(p.update_id) for p in fresh))
            fresh = [p for p, ours in zip(fresh, verdicts, strict=True) if ours]
        for item in fresh:
            self._start(item.update_id, item.chat_id, item.payload)
        return len(fresh)

    async def _ours(self, update_id: int) -> bool:
        """Whether this replica answers a journaled update it did not take in this process (it
        was journaled before a restart): yes when its claim is this journal's or has lapsed; an
        update another replica owns is done here (answered there); one being taken waits."""
        assert self.claims is not None
        if update_id in self._taken:
            return True
        claim = await self.claims.reclaim(update_id)
        if claim == "owned":
            await self.bot.db(self.bot.store.skip, update_id)
            logger.info("update %d is owned by another replica: answered there", update_id)
            return False
        if claim == "pending":
            return False
        self._taken.add(update_id)
        return True

    async def prepare(self) -> None:
        """Before the first poll: learn who the bot is, and remove a leftover webhook."""
        await self.bot.me()
        await self.telegram.delete_webhook(drop_pending_updates=False)
        self.prepared = True

    async def run(self) -> None:
        """Long-poll until cancelled. Errors back off (up to ``max_backoff``), never crash."""
        failures = 0
        while True:
            try:
                if not self.prepared:
                    await self.prepare()
                updates = await self.telegram.get_updates(self.offset, timeout=self.poll_timeout)
                await self._accept_all(updates)
                failures = 0
                self._told(None)
            except Exception as exc:  # a bad answer or a store failure: back off, never die
                if not isinstance(exc, KhronosError):
                    logger.exception("polling hit an unexpected error")
                self._told(_problem(exc))
                failures += 1
                delay = min(self.max_backoff, 0.5 * 2 ** min(failures, 8))
                delay = max(delay, float(getattr(exc, "retry_after", None) or 0.0))
                logger.warning("polling failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    def idle(self) -> None:
        """Polling stopped here (another replica holds the lease): what Telegram said to the
        last poll (say, a 409 while both polled around a Redis failover) describes nothing now."""
        self.problem = None

    def _told(self, problem: str | None) -> None:
        """Keep (and log once, when it changes) why polling fails."""
        if problem != self.problem:
            if problem is not None:
                logger.error("polling: %s", problem)
            elif self.problem is not None:
                logger.info("polling works again")
        self.problem = problem

    async def pump(self) -> None:
        """Every ``retry_interval``, restart jobs for journaled updates whose job failed."""
        while True:
            await asyncio.sleep(self.retry_interval)
            with contextlib.suppress(KhronosError):
                await self.resume()


def _problem(exc: Exception) -> str | None:
    """The operator's version of a polling failure worth a status line (Telegram's 409s)."""
    if isinstance(exc, UpstreamError) and exc.status == 409:
        return WEBHOOK_ACTIVE if "webhook" in str(exc).lower() else OTHER_POLLER
    return None


def _chat_id(update: dict[str, Any]) -> int:
    for kind in ("message", "edited_message", "channel_post", "callback_query"):
        body = update.get(kind)
        if isinstance(body, dict):
            chat = body.get("chat") or (body.get("message") or {}).get("chat") or {}
            if isinstance(chat.get("id"), int):
                return int(chat["id"])
    return 0
