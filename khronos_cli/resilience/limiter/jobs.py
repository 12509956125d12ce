"""What a limiter queues: jobs, the per-key groups they wait in, and the jobs handed back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from khronos_cli.config import Rate

__all__ = ["INF", "PRIORITY_DEFAULT", "Job", "KeyGroup", "QueuedJob", "is_group_chat", "spacing"]

INF: Final = float("inf")
PRIORITY_DEFAULT: Final = 5


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job that never started, handed back by ``stop(drop_waiting=True)`` to be persisted."""

    key: Hashable
    priority: int
    weight: int
    fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


class Job:
    """One call waiting for (or holding) its slot."""

    __slots__ = ("args", "fn", "future", "group", "kwargs", "priority", "seq", "weight")

    def __init__(self, fn: Any, args: Any, kwargs: Any, group: KeyGroup, prio: int, w: int) -> None:
        self.fn, self.args, self.kwargs, self.group = fn, args, kwargs, group
        self.priority, self.weight, self.seq = prio, w, 0
        self.future: asyncio.Future[None] | None = None

    def __lt__(self, other: Job) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)

    def handed_back(self) -> QueuedJob:
        return QueuedJob(
            self.group.key, self.priority, self.weight, self.fn, self.args, self.kwargs
        )


class KeyGroup:
    """One key's queue and limits state."""

    __slots__ = (
        "halted",
        "handle",
        "heap",
        "horizon",
        "idle_since",
        "interval",
        "key",
        "last_start",
        "not_before",
        "ready_seq",
        "running",
        "wake_at",
    )

    def __init__(self, key: Hashable, handle: object, horizon: float, interval: float) -> None:
        self.key, self.handle, self.horizon, self.interval = key, handle, horizon, interval
        self.heap: list[Job] = []
        self.running = 0
        self.last_start = self.not_before = self.halted = -INF
        self.idle_since = 0.0
        self.ready_seq = -1
        self.wake_at: float | None = None


def is_group_chat(key: Hashable) -> bool:
    """Telegram group and supergroup chat ids are negative."""
    if isinstance(key, int):
        return key < 0
    return isinstance(key, str) and key.startswith("-") and key[1:].isdigit()


def spacing(rates: Sequence[Rate]) -> float:
    """Seconds per unit of the tightest rate (0 without rates)."""
    return max((rate.period / rate.limit for rate in rates), default=0.0)
