"""Helpers of the limiter tests: the factory type and a gate that holds jobs until opened."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from khronos_cli.resilience.limiter.limiter import Limiter

__all__ = ["Factory", "Gate"]

Factory = Callable[..., Limiter]


class Gate:
    """Jobs that record their start and then wait until the test opens the gate."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.opened = asyncio.Event()

    async def job(self, tag: Any) -> Any:
        self.started.append(tag)
        await self.opened.wait()
        return tag
