"""The sandbox Telegram's update queue, with the ``getUpdates`` contract of the real Bot API.

Updates wait in order until *confirmed*: ``poll(offset)`` forgets every update whose id is below
``offset`` (a negative offset keeps only the last ``-offset``), then returns those left, up to
``limit``. Nothing is forgotten by being returned: an update delivered but not confirmed comes
again on the next poll, which is what lets a bot crash without losing one.

``poll`` with a ``timeout`` is a long poll: it returns as soon as an update arrives, or empty when
the timeout passes. Only one poll is pending at a time: a new one terminates the previous, which
raises :class:`PollTerminated` (the Bot API's 409 "terminated by other getUpdates request").

Waiters (pollers, the webhook sender) wait on :meth:`UpdateQueue.arrival`, an event set at the
next change — an update, a terminated poll, :meth:`wake` — and then replaced.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PollTerminated", "UpdateQueue"]

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
        self.allowed_updates: list[str] = []  # remembered across polls, as Telegram does
        self._updates: deque[Json] = deque()
        self._next_id = first_update_id
        self._arrival = asyncio.Event()
        self._poll: _Poll | None = None

    def __len__(self) -> int:
        return len(self._updates)

    def push(self, update: Mapping[str, Any]) -> int:
        """Queue ``update`` under the next ``update_id``; returns that id."""
        update_id = self._next_id
        self._next_id += 1
        self._updates.append({**update, "update_id": update_id})
        self.wake()
        return update_id

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
                batch = self._select(offset, limit)
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

    def _select(self, offset: int, limit: int) -> list[Json]:
        allowed = set(self.allowed_updates)
        batch: list[Json] = []
        for update in list(self._updates):
            if update["update_id"] < offset:
                continue
            if allowed and not allowed.intersection(update.keys()):
                self._updates.remove(update)  # Telegram never creates updates of unwanted kinds
                continue
            batch.append(update)
            if len(batch) == limit:
                break
        return batch
