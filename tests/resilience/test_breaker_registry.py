"""The registry: the seed's four breakers with DESIGN.md's defaults, config overrides, storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from khronos_cli import config
from khronos_cli.errors import CircuitOpenError, UpstreamError
from khronos_cli.resilience.breaker.registry import build_breakers
from tests.support import async_wait_for, through

DESIGN_TABLE = {  # name: (timeout, error threshold, reset)
    "anthropic-api": (30.48, 50.0, 30.0),  # a 1,024-token answer: 10 s + 1,024 / 50 tokens/s
    "telegram-api": (5.0, 50.0, 30.0),
    "telegram-updates": (40.0, 50.0, 5.0),  # the 30 s long poll plus 10 s
    "openai-api": (30.48, 50.0, 30.0),
    "openai-transcription": (120.0, 50.0, 30.0),
    "database": (5.0, 30.0, 15.0),
}


async def test_the_seed_breakers_have_designs_defaults() -> None:
    """With no config the registry holds the seed's breakers with DESIGN.md's table, the LLM
    timeouts sized to their output caps, plus getUpdates' and transcription's own breakers."""
    registry = build_breakers()
    assert {
        name: (b.settings.timeout, b.settings.error_threshold, b.settings.reset_timeout)
        for name, b in registry.items()
    } == DESIGN_TABLE
    assert registry.storage.kind == "memory"
    await registry.aclose()


async def test_config_overrides_one_breaker(tmp_path: Path) -> None:
    """A khronos.toml value changes that breaker only; the others keep their defaults."""
    path = tmp_path / "khronos.toml"
    path.write_text('[breakers.database]\ntimeout = "2s"\nvolume_threshold = 20\n')
    registry = build_breakers(config.load(path, env={}, state_dir=tmp_path))
    assert (
        registry["database"].settings.timeout,
        registry["database"].settings.volume_threshold,
    ) == (2.0, 20)
    assert registry["database"].settings.reset_timeout == 15.0
    assert registry["anthropic-api"].settings.timeout == 30.48
    await registry.aclose()


async def test_http_breakers_judge_outages_not_our_mistakes() -> None:
    """A 4xx UpstreamError is neither success nor failure; a 503 is a failure."""
    registry = build_breakers()
    breaker = registry["anthropic-api"]

    async def bad_request() -> None:
        raise UpstreamError("anthropic-api", "bad request", status=400)

    async def unavailable() -> None:
        raise UpstreamError("anthropic-api", "service unavailable", status=503)

    with pytest.raises(UpstreamError):
        await through(breaker, bad_request)
    assert breaker.snapshot()["stats"]["failures"] == 0
    with pytest.raises(UpstreamError):
        await through(breaker, unavailable)
    assert breaker.snapshot()["stats"]["failures"] == 1
    await registry.aclose()


async def test_the_snapshot_is_keyed_by_name_with_state_and_stats() -> None:
    """registry.snapshot() is the {name: {state, stats, ...}} JSON the CLI and HTTP print."""
    registry = build_breakers()
    data = json.loads(json.dumps(registry.snapshot()))
    assert set(data) == set(DESIGN_TABLE)
    assert all(v["state"] == "closed" and "stats" in v for v in data.values())
    await registry.aclose()


async def test_redis_url_in_settings_shares_state(redis_url: str, tmp_path: Path) -> None:
    """With redis_url set the registry's breakers share state through Redis."""
    settings = config.load(env={"REDIS_URL": redis_url}, state_dir=tmp_path)
    one, two = build_breakers(settings), build_breakers(settings)
    try:
        await one.startup()
        await two.startup()
        assert one.storage.kind == "redis"
        await one["database"].force_open("drill", 60)
        await async_wait_for(lambda: two["database"].state == "open")
        with pytest.raises(CircuitOpenError, match="drill"):
            async with two["database"]:
                pass
    finally:
        await one.aclose()
        await two.aclose()
