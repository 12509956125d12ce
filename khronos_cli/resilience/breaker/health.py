"""A breaker's periodic health check: a cheap probe that opens it, or invites a trial.

A health check is a cheap probe (getMe, a GET of the API's root, ``SELECT 1``): it gets at most
:data:`HEALTH_CHECK_TIMEOUT` even when the calls it stands for may take far longer (an LLM answer:
30 s), so a hang is seen within an interval and this, not within a long answer's timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from khronos_cli.resilience.breaker.state import OPEN, BreakerState

__all__ = ["HEALTH_CHECK_TIMEOUT", "HealthCheck"]

HEALTH_CHECK_TIMEOUT = 5.0


class HealthCheck:
    """Runs ``probe`` every ``health_check_interval`` against one breaker's state."""

    __slots__ = ("_probe", "_state", "_task")

    def __init__(self, state: BreakerState, probe: Callable[[], Awaitable[object]]) -> None:
        self._state = state
        self._probe = probe
        self._task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"health:{self._state.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            # The check's period (the seed's 5 s), not a wait for a condition.
            await asyncio.sleep(self._state.settings.health_check_interval)
            await self.check()

    async def check(self) -> bool:
        """Run the probe once. A failure (an exception or ``False``) opens the breaker; a pass
        while open (not forced, not held) makes the next call a half-open trial."""
        state = self._state
        error: Exception | None = None
        try:
            async with asyncio.timeout(min(state.settings.timeout, HEALTH_CHECK_TIMEOUT)):
                healthy = await self._probe() is not False
        except Exception as exc:
            healthy, error = False, exc
        now = state.clock()
        state.refresh(now)
        if not healthy:
            state.listeners.emit("health_check_failed", state.current, error)
            if state.current is not OPEN and state.forced is None:  # say what it did
                why = "no answer in time" if isinstance(error, TimeoutError) else str(error or "")
                state.trip(now, "health check failed" + (f": {why}" if why else ""))
        elif state.current is OPEN and state.forced is None and now >= state.hold_until:
            state.next_trial_at = now
            state.to_half_open()
        return healthy
