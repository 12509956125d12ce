"""The sandbox Telegram's update queue, with the ``getUpdates`` contract of the real Bot API.

Updates wait in order until *confirmed*: ``poll(offset)`` forgets every update whose id is below
``offset`` (a negative offset keeps only the last ``-offset``), then returns those left, up to
``limit``. Nothing is forgotten by being returned: an update delivered but not confirmed comes
again on the next poll, which is what lets a bot crash without losing one.

``poll`` with a ``timeout`` is a long poll: it returns as soon as an update arrives, or empty when
the timeout passes. Only one poll is pending at a time: a new one terminates the previous, which
raises :class:`PollTerminated` (the Bot API's 409 "terminated by other getUpdates request").

Only the kinds a bot asked for are queued (``allowed_updates``, remembered across calls). A bot
that never said, or said ``[]``, gets Telegram's default: every kind except ``chat_member``,
``message_reaction`` and ``message_reaction_count``, which must be asked for by name.

Waiters (pollers, the webhook sender) wait on :meth:`UpdateQueue.arrival`, an event set at the
next change — an update, a terminated poll, :meth:`wake` — and then replaced.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["DEFAULT_EXCLUDED", "PollTerminated", "UpdateQueue"]

DEFAULT_EXCLUDED = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
Json = dict[str, Any]


class PollTerminated(Exception):
    """A newer poll took over while this one was pending."""


class _Poll:
    __slots__ = ("terminated",)

    def __init__(self) -> None:
        self.terminated = False


class UpdateQueue:
    """Unconfirmed updates in ``update_id`` order, and the one pending long poll."""

    def __init__(self, *, first_update_id: int = 1) -> None:
        self._allowed: frozenset[str] = frozenset()  # empty: every kind but DEFAULT_EXCLUDED
        self._updates: deque[Json] = deque()
        self._next_id = first_update_id
        self._arrival = asyncio.Event()
        self._poll: _Poll | None = None

    def __len__(self) -> int:
        return len(self._updates)

    @property
    def next_update_id(self) -> int:
        """The id the next pushed update gets."""
        return self._next_id

    def continue_from(self, update_id: int) -> None:
        """Give later updates ids from ``update_id`` on, as Telegram's keep growing across a
        bot's restarts (never moves backwards)."""
        self._next_id = max(self._next_id, update_id)

    @property
    def allowed_updates(self) -> list[str]:
        """The update kinds asked for (empty: Telegram's default, all but
        :data:`DEFAULT_EXCLUDED`), remembered across polls as Telegram does."""
        return sorted(self._allowed)

    @allowed_updates.setter
    def allowed_updates(self, kinds: list[str]) -> None:
        self._allowed = frozenset(kinds)
        kept = [update for update in self._updates if self._wanted(update)]
        self._updates = deque(kept)

    def push(self, update: Mapping[str, Any]) -> int:
        """Queue ``update`` under the next ``update_id``; returns that id.

        An update of a kind not in :attr:`allowed_updates` takes an id but is never queued:
        Telegram does not create updates a bot said it does not want."""
        update_id = self._next_id
        self._next_id += 1
        queued = {**update, "update_id": update_id}
        if self._wanted(queued):
            self._updates.append(queued)
            self.wake()
        return update_id

    def _wanted(self, update: Mapping[str, Any]) -> bool:
        kinds = update.keys() - {"update_id"}
        if not self._allowed:
            return not kinds <= DEFAULT_EXCLUDED
        return not self._allowed.isdisjoint(kinds)

    def first_pending(self) -> Json | None:
        """The oldest unconfirmed update, if any."""
        return self._updates[0] if self._updates else None

    def confirm(self, offset: int) -> None:
        """Forget every update whose id is below ``offset``."""
        while self._updates and self._updates[0]["update_id"] < offset:
            self._updates.popleft()

    def drop_pending(self) -> None:
        """Forget every update (``drop_pending_updates``)."""
        self._updates.clear()

    def arrival(self) -> asyncio.Event:
        """An event set at the next change worth waking a waiter for."""
        return self._arrival

    def wake(self) -> None:
        """Wake every waiter (they re-check their condition)."""
        self._arrival.set()
        self._arrival = asyncio.Event()

    async def poll(
        self, offset: int, limit: int, timeout: float, *, stop: Callable[[], bool]
    ) -> list[Json]:
        """Confirm below ``offset``, then return up to ``limit`` updates, waiting up to
        ``timeout`` seconds for one; returns early (maybe empty) once ``stop()`` is true."""
        if offset < 0:
            while len(self._updates) > -offset:
                self._updates.popleft()
        else:
            self.confirm(offset)
        if self._poll is not None:
            self._poll.terminated = True
            self.wake()
        poll = self._poll = _Poll()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                arrival = self._arrival
                if poll.terminated:
                    raise PollTerminated
                batch = list(itertools.islice(self._updates, limit))  # all are >= offset
                remaining = deadline - loop.time()
                if batch or remaining <= 0 or stop():
                    return batch
                try:
                    async with asyncio.timeout(remaining):
                        await arrival.wait()
                except TimeoutError:
                    pass
        finally:
            if self._poll is poll:
                self._poll = None
