"""Active jobs (one per update being answered), tracked so the shutdown can wait for them.

A job that is cancelled (step 3 ran out of time, or a quick stop) leaves its update journaled:
nothing was recorded for it, so the next start answers it. Cancelling is therefore always safe,
and :meth:`JobTracker.cancel_all` returns how many were kept for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["JobTracker"]

logger = logging.getLogger("khronos.jobs")


class JobTracker:
    """A set of running tasks with a way to wait for them all and to cut them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.started = 0
        self.finished = 0
        self.failed = 0

    @property
    def active(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        self._idle.clear()
        self.started += 1
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            self.finished += 1
            error = task.exception()
            if error is not None:
                self.failed += 1
                logger.error("job %s failed: %s: %s", task.get_name(), type(error).__name__, error)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self) -> int:
        """Wait until no job runs; returns how many were running when the wait began."""
        count = len(self._tasks)
        await self._idle.wait()
        return count

    async def cancel_all(self) -> int:
        """Cancel every running job and wait for them to unwind; returns how many were cut."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        return len(tasks)
