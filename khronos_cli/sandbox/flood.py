"""Telegram's flood control, as the sandbox Telegram enforces it on ``sendMessage``.

Three sliding-window logs: one per private chat (1 message/s), one per group chat (negative chat
id, 20 messages/min) and one for the whole bot (30 messages/s). A send is admitted only if every
window that applies to it has room; an admitted send is recorded in all of them, a rejected one in
none (so a bot that honours ``retry_after`` is never punished twice). A rejection's ``retry_after``
is the whole number of seconds until the fullest window frees a slot, at least 1, as Telegram's
``parameters.retry_after`` is.

A chat can also be *forced* into flood (:meth:`FloodControl.force`): every send to it is refused
with the same ``retry_after`` until the given time passes, whatever the windows say, so a test can
pin "a 429 in one chat holds that chat only".

The windows are exact (no burst allowance), so a test can pin "the N+1st send inside the period is
refused, the Nth is not". :meth:`FloodLimits.off` disables all of them for throughput benchmarks.
The clock is injected: a test can step it instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from khronos_cli.config import Rate

__all__ = ["FloodControl", "FloodLimits"]

_SWEEP_EVERY = 1024  # admissions between sweeps of idle chat windows
TELEGRAM_PER_CHAT = Rate(1, 1.0)
TELEGRAM_PER_GROUP = Rate(20, 60.0)
TELEGRAM_PER_BOT = Rate(30, 1.0)


@dataclass(frozen=True)
class FloodLimits:
    """The limits enforced; ``None`` switches one off."""

    per_chat: Rate | None = TELEGRAM_PER_CHAT
    per_group: Rate | None = TELEGRAM_PER_GROUP
    per_bot: Rate | None = TELEGRAM_PER_BOT

    @classmethod
    def off(cls) -> FloodLimits:
        """No flood control at all (throughput benchmarks)."""
        return cls(per_chat=None, per_group=None, per_bot=None)

    def to_json(self) -> dict[str, str | None]:
        return {
            "per_chat": _rate_text(self.per_chat),
            "per_group": _rate_text(self.per_group),
            "per_bot": _rate_text(self.per_bot),
        }


def _rate_text(rate: Rate | None) -> str | None:
    return None if rate is None else str(rate)


class _Window:
    """Times of the admitted sends inside the last ``rate.period`` seconds."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def wait(self, rate: Rate, now: float) -> float:
        """Seconds until one more send fits (0.0: it fits now)."""
        times = self.times
        while times and times[0] <= now - rate.period:
            times.popleft()
        if len(times) < rate.limit:
            return 0.0
        return times[len(times) - rate.limit] + rate.period - now


class FloodControl:
    """Admits or refuses sends by chat id against :class:`FloodLimits`."""

    def __init__(
        self, limits: FloodLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or FloodLimits()
        self._clock = clock
        self._bot = _Window()
        self._chats: dict[int, _Window] = {}
        self._forced: dict[int, tuple[float, int]] = {}  # chat -> (until, retry_after)
        self._admitted = 0

    def force(self, chat_id: int, retry_after: int, seconds: float) -> None:
        """Refuse every send to ``chat_id`` with ``retry_after`` for the next ``seconds``."""
        if retry_after < 1 or seconds <= 0:
            raise ValueError(
                f"need retry_after >= 1 and seconds > 0, got {retry_after} and {seconds}"
            )
        self._forced[chat_id] = (self._clock() + seconds, retry_after)

    def forced(self) -> dict[int, dict[str, float]]:
        """Chats forced into flood right now: ``{chat: {"retry_after", "seconds_left"}}``."""
        now = self._clock()
        return {
            chat: {"retry_after": retry_after, "seconds_left": round(until - now, 3)}
            for chat, (until, retry_after) in self._forced.items()
            if until > now
        }

    def admit(self, chat_id: int) -> int | None:
        """Record a send to ``chat_id`` and return None, or refuse it with ``retry_after``."""
        now = self._clock()
        forced = self._forced.get(chat_id)
        if forced is not None:
            if now < forced[0]:
                return forced[1]
            del self._forced[chat_id]
        rate = self.limits.per_group if chat_id < 0 else self.limits.per_chat
        checks: list[tuple[_Window, Rate]] = []
        if rate is not None:
            checks.append((self._chats.setdefault(chat_id, _Window()), rate))
        if self.limits.per_bot is not None:
            checks.append((self._bot, self.limits.per_bot))
        wait = max((window.wait(r, now) for window, r in checks), default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait))
        for window, _ in checks:
            window.times.append(now)
        self._admitted += 1
        if self._admitted % _SWEEP_EVERY == 0:
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        """Forget chats whose window emptied, so 100k chats do not stay in memory."""
        longest = max(
            (r.period for r in (self.limits.per_chat, self.limits.per_group) if r is not None),
            default=0.0,
        )
        idle = [
            chat
            for chat, window in self._chats.items()
            if not window.times or window.times[-1] <= now - longest
        ]
        for chat in idle:
            del self._chats[chat]

    @property
    def tracked_chats(self) -> int:
        """How many chat windows are held right now."""
        return len(self._chats)
