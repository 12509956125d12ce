"""Fixtures of the limiter tests: limiters built on memory, or on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from khronos_cli.config import LimiterSettings
from khronos_cli.resilience.limiter.limiter import Limiter
from tests.resilience.helpers import Factory


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Builds limiters on the backend of the parameter; stops them all afterwards."""
    made: list[Limiter] = []
    client = None
    if request.param == "redis":
        client = Redis.from_url(request.getfixturevalue("redis_url"))

    def factory(**fields: Any) -> Limiter:
        clock = fields.pop("clock", None)
        settings = LimiterSettings(fields.pop("name", "test"), **fields)
        limiter = Limiter(settings, redis=client, clock=clock)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.aclose()
    if client is not None:
        await client.aclose()


@pytest.fixture
async def memory() -> AsyncIterator[Factory]:
    """Builds in-memory limiters; stops them all afterwards."""
    made: list[Limiter] = []

    def factory(**fields: Any) -> Limiter:
        clock = fields.pop("clock", None)
        limiter = Limiter(LimiterSettings(fields.pop("name", "test"), **fields), clock=clock)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.aclose()
