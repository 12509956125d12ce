"""The worker's event stream: breaker transitions, limiter drops and halts, outages.

Publishers call :meth:`EventHub.publish` synchronously (from listeners); each subscriber of the
control socket's ``GET /events`` has its own bounded queue. A slow subscriber loses its oldest
events; it never slows the worker down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["EventHub"]


class EventHub:
    def __init__(self, *, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.published = 0

    def publish(self, topic: str, /, **fields: Any) -> None:
        event = {"event": topic, "at": round(time.time(), 3), **fields}
        self.published += 1
        for queue in self._queues:
            if queue.full():  # drop the oldest: a slow reader never slows the worker
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Events from now on, until the subscriber goes away."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.capacity)
        self._queues.add(queue)
        try:
            yield {"event": "subscribed", "at": round(time.time(), 3)}
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
