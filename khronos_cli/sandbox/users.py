"""Simulated users: people writing to the bot at a set rate, through the Telegram stand-in.

:class:`SimulatedUsers` pushes ``rate`` messages per second in total, round-robin over ``users``
private chats (so each chat gets ``rate / users`` messages per second, evenly spaced), a
``voice_share`` of them as voice notes and, when ``groups`` > 0, a ``group_share`` of them into
group chats. It stops by itself after ``count`` messages and/or ``duration`` seconds. The schedule
is fixed in advance (message *i* is due at ``start + i / rate``), so a slow event loop catches up
instead of drifting, and the choices come from a seeded random generator, so a run is repeatable.
Some texts look like markup (``[bold]``, ``<b>``, ``*stars*``) on purpose: whoever shows them
must treat them as plain text. What each push is — plain traffic, or with ``mix=True`` long
messages, directive words, stickers, a blocked user, big and empty voice notes, group commands,
mentions, replies, chatter, service messages, an edit, a callback query, a migration — is
:mod:`.traffic`'s business.

Everything users do goes into a :class:`~khronos_cli.sandbox.ledger.Ledger` with whether it
deserves an answer, the stand-in's blocks and migrations too, and every reply the bot sends while
the users run is matched in it. Each push and reply is logged as one line through ``on_line``
(default: the ``khronos.sandbox.users`` logger), with the texts ``repr``-quoted so no log
viewer ever interprets them (a long one shortened, with its length).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from khronos_cli.sandbox.ledger import FALLBACK_TEXT, Ledger, LedgerReport
from khronos_cli.sandbox.records import Delivery
from khronos_cli.sandbox.traffic import FIRST_GROUP_ID, FIRST_USER_ID, PHRASES, Traffic, quoted

if TYPE_CHECKING:
    from khronos_cli.sandbox.telegram import TelegramStandIn

__all__ = ["FIRST_GROUP_ID", "FIRST_USER_ID", "PHRASES", "SimulatedUsers"]

LOGGER = logging.getLogger("khronos.sandbox.users")


class SimulatedUsers:
    """Users pushing messages into a :class:`TelegramStandIn` at a configured rate."""

    def __init__(
        self,
        telegram: TelegramStandIn,
        *,
        users: int = 5,
        rate: float = 1.0,
        voice_share: float = 0.1,
        groups: int = 0,
        group_share: float = 0.2,
        count: int | None = None,
        duration: float | None = None,
        seed: int = 0,
        fallback_text: str = FALLBACK_TEXT,
        on_line: Callable[[str], object] | None = None,
        mix: bool = False,
    ) -> None:
        if users < 1 or rate <= 0:
            raise ValueError(f"need users >= 1 and rate > 0, got users={users} rate={rate}")
        if count is None and duration is None:
            raise ValueError("give count and/or duration: simulated users must stop by themselves")
        if not (0.0 <= voice_share <= 1.0 and 0.0 <= group_share <= 1.0):
            raise ValueError("voice_share and group_share are fractions between 0 and 1")
        self.telegram = telegram
        self.users = users
        self.rate = rate
        self.voice_share = voice_share
        self.groups = groups
        self.group_share = group_share if groups > 0 else 0.0
        self.count = count
        self.duration = duration
        self.mix = mix
        self.ledger = Ledger(fallback_text=fallback_text)
        self.sent = 0
        self._traffic = Traffic(
            telegram.chats,
            users=users,
            voice_share=voice_share,
            groups=groups,
            group_share=self.group_share,
            mix=mix,
            seed=seed,
        )
        self._migrations_seen: set[int] = set()
        self._blocks_seen: dict[int, int] = {}
        self._on_line = on_line or LOGGER.info
        self.finished = False  # every message pushed
        self._progress = asyncio.Event()
        self._task: asyncio.Task[LedgerReport] | None = None
        self._listening = False

    def report(self) -> LedgerReport:
        """The ledger's report right now."""
        self._sync_world()
        return self.ledger.report()

    async def run(self) -> LedgerReport:
        """Push every message (until ``count`` or ``duration``), then return the report."""
        self._listen()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in itertools.count():
            if self.count is not None and index >= self.count:
                break
            offset = index / self.rate
            if self.duration is not None and offset >= self.duration:
                break
            due = start + offset
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            self._push_one(index, due - start)
        self.finished = True
        self._signal()
        return self.report()

    def start(self) -> None:
        """Run in the background; :meth:`aclose` stops it."""
        if self._task is None:
            self._listen()
            self._task = asyncio.create_task(self.run(), name="sandbox-simulated-users")

    async def wait_sent(self) -> None:
        """Wait until the background run pushed its last message."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def wait_answered(self, timeout: float) -> LedgerReport:
        """Wait (at most ``timeout`` s) until every pushed message has a reply; the report."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    progress = self._progress
                    if self.finished and not self.ledger.waiting:
                        return self.report()
                    await progress.wait()
        return self.report()

    async def aclose(self) -> None:
        """Stop pushing and stop matching replies."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._signal()
        if self._listening:
            self.telegram.remove_listener(self._on_delivery)
            self._listening = False

    # -- internals --------------------------------------------------------------------------------

    def _listen(self) -> None:
        if not self._listening:
            self.telegram.add_listener(self._on_delivery)
            self._listening = True

    def _push_one(self, index: int, at: float) -> None:
        first = len(self.telegram.pushed)
        line = self._traffic.step(index, at)
        self._sync_world()
        for message in self.telegram.pushed[first:]:
            self.ledger.record_sent(message)
        self.sent += 1
        self._signal()
        self._on_line(line)

    def _sync_world(self) -> None:
        """Tell the ledger about migrations and blocks it has not seen (ours or a test's)."""
        chats = self.telegram.chats
        for old, new in chats.migrations.items():
            if old not in self._migrations_seen:
                self._migrations_seen.add(old)
                self.ledger.record_migration(old, new)
        for user, periods in chats.blocks.items():
            seen = self._blocks_seen.get(user, 0)
            ended = periods[seen - 1][1] if seen else None
            if ended is not None:
                self.ledger.record_unblock(user, ended)
            for since, until in periods[seen:]:
                self.ledger.record_block(user, since, until)
            self._blocks_seen[user] = len(periods)

    def _signal(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _on_delivery(self, delivery: Delivery) -> None:
        self.ledger.record_delivery(delivery)
        self._signal()
        target = delivery.replies_to
        about = f"reply to #{target}" if target is not None else "not a reply"
        if delivery.reply_missing:
            about += f"; #{delivery.reply_to_message_id} is not in this chat"
        self._on_line(
            f"bot -> chat {delivery.chat_id} #{delivery.message_id} ({about}): "
            f"{quoted(delivery.text)}"
        )
