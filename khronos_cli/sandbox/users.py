"""Simulated users: people writing to the bot at a set rate, through the Telegram stand-in.

:class:`SimulatedUsers` pushes ``rate`` messages per second in total, round-robin over ``users``
private chats (so each chat gets ``rate / users`` messages per second, evenly spaced), a
``voice_share`` of them as voice notes and, when ``groups`` > 0, a ``group_share`` of them into
group chats. It stops by itself after ``count`` messages and/or ``duration`` seconds. The schedule
is fixed in advance (message *i* is due at ``start + i / rate``), so a slow event loop catches up
instead of drifting, and the texts come from a seeded random generator, so a run is repeatable.
Some texts look like markup (``[bold]``, ``<b>``, ``*stars*``) on purpose: whoever shows them
must treat them as plain text.

Every message goes into a :class:`~khronos_cli.sandbox.ledger.Ledger`, and every reply the bot
sends while the users run is matched in it. Each message and reply is logged as one line through
``on_line`` (default: the ``khronos_cli.sandbox.users`` logger), with the texts ``repr``-quoted so
no log viewer ever interprets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from khronos_cli.sandbox.ledger import FALLBACK_TEXT, Ledger, LedgerReport
from khronos_cli.sandbox.records import Delivery

if TYPE_CHECKING:
    from khronos_cli.sandbox.telegram import TelegramStandIn

__all__ = ["SimulatedUsers"]

LOGGER = logging.getLogger("khronos_cli.sandbox.users")
FIRST_USER_ID = 1001
FIRST_GROUP_ID = -1_001_000_000_001
PHRASES = (
    "olá, tudo bem?",
    "qual é a capital da Austrália?",
    "me conta uma piada curta",
    "resuma a teoria da relatividade em uma frase",
    "what's the weather like on Mars?",
    "traduza 'bom dia' para o inglês",
    "[bold red]isto não é markup[/bold red]",
    "<b>nem isto</b> & <i>isto</i>",
    "*estrelas* _sublinhado_ `código`",
    "emoji 🚀 e acentuação: ação, coração, pão",
)


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
        self.ledger = Ledger(fallback_text=fallback_text)
        self.sent = 0
        self._random = random.Random(seed)
        self._on_line = on_line or LOGGER.info
        self.finished = False  # every message pushed
        self._progress = asyncio.Event()
        self._task: asyncio.Task[LedgerReport] | None = None
        self._listening = False

    def report(self) -> LedgerReport:
        """The ledger's report right now."""
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
            self._push_one(index)
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

    def _push_one(self, index: int) -> None:
        user_id = FIRST_USER_ID + index % self.users
        chat_id = user_id
        if self.group_share and self._random.random() < self.group_share:
            chat_id = FIRST_GROUP_ID - self._random.randrange(self.groups)
        text = f"{self._random.choice(PHRASES)} (#{index + 1})"
        if self._random.random() < self.voice_share:
            message_id = self.telegram.push_voice(chat_id, user_id, text)
            what = "voice"
        else:
            message_id = self.telegram.push_text(chat_id, user_id, text)
            what = "text"
        message = self.telegram.pushed[-1]
        self.ledger.record_sent(message)
        self.sent += 1
        self._signal()
        self._on_line(f"user {user_id} -> chat {chat_id} #{message_id} {what}: {text!r}")

    def _signal(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _on_delivery(self, delivery: Delivery) -> None:
        self.ledger.record_delivery(delivery)
        self._signal()
        target = delivery.reply_to_message_id
        about = f"reply to #{target}" if target is not None else "not a reply"
        self._on_line(
            f"bot -> chat {delivery.chat_id} #{delivery.message_id} ({about}): {delivery.text!r}"
        )
