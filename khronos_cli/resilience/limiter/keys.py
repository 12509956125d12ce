"""A limiter's keys: one :class:`KeyGroup` per key, made on demand and evicted when idle.

Idle groups (nothing queued or running) sit in an insertion-ordered dict and are evicted oldest
first once idle for ``idle_timeout`` and their rate state has drained (so eviction can never
reset a rate early): O(1) per eviction, one timer for all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence

from khronos_cli.config import Rate
from khronos_cli.resilience.limiter.jobs import KeyGroup, is_group_chat, spacing

__all__ = ["KeyTable"]

KeyState = Callable[[Hashable, Sequence[Rate]], tuple[object, float]]


class KeyTable:
    """Groups by key, with their eviction."""

    __slots__ = (
        "_clock",
        "_group_rates",
        "_idle",
        "_key_rates",
        "_key_state",
        "_sweeper",
        "groups",
        "idle_timeout",
        "key_min",
    )

    def __init__(
        self,
        key_state: KeyState,
        clock: Callable[[], float],
        key_rates: Sequence[Rate],
        group_rates: Sequence[Rate],
        key_min: float,
        idle_timeout: float,
    ) -> None:
        self._key_state = key_state
        self._clock = clock
        self._key_rates, self._group_rates = key_rates, group_rates
        self.key_min = key_min
        self.idle_timeout = idle_timeout
        self.groups: dict[Hashable, KeyGroup] = {}
        self._idle: dict[Hashable, None] = {}  # insertion order = order they went idle
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.groups)

    def get(self, key: Hashable) -> KeyGroup | None:
        return self.groups.get(key)

    def group(self, key: Hashable, now: float) -> KeyGroup:
        """``key``'s group, made (with its rates: group chats may have their own) if new."""
        group = self.groups.get(key)
        if group is None:
            rates = self._group_rates if self._group_rates and is_group_chat(key) else None
            rates = self._key_rates if rates is None else rates
            handle, horizon = self._key_state(key, rates)
            group = self.groups[key] = KeyGroup(key, handle, horizon, spacing(rates))
            group.idle_since = now
        return group

    def busy(self, group: KeyGroup) -> None:
        """``group`` has work: not idle any more."""
        self._idle.pop(group.key, None)

    def mark_idle(self, group: KeyGroup, now: float) -> None:
        """A group with nothing queued or running joins the idle list (evicted later)."""
        if not group.heap and group.running == 0 and group.key not in self._idle:
            group.idle_since = now
            self._idle[group.key] = None
            if self._sweeper is None:
                self._arm(self._evict_after(group))

    def _evict_after(self, group: KeyGroup) -> float:
        return max(self.idle_timeout, group.horizon, self.key_min)

    def _arm(self, delay: float) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(max(0.0, delay), self.sweep)

    def sweep(self) -> None:
        """Evict the groups idle long enough by now."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        now = self._clock()
        evicted = 0
        while self._idle:
            key = next(iter(self._idle))
            group = self.groups[key]
            due = max(group.idle_since + self._evict_after(group), group.halted)
            if due > now:
                self._arm(due - now)
                break
            del self._idle[key]
            del self.groups[key]
            evicted += 1
        if evicted > 1024 and len(self.groups) < evicted:  # dicts never shrink on deletion
            self.groups = dict(self.groups)
            self._idle = dict(self._idle)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
