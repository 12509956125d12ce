"""Degraded but serving: a worker started while Redis is down polls alone on local limits and
rejoins when Redis answers; `khronos status` says `degraded`, with the reasons, whenever Redis is
lost or any breaker is open."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.instance import FAST_CONFIG, Instance
from tests.reliability.harness import answered
from tests.support import RedisServer, wait_for

pytestmark = pytest.mark.timeout(120)


def status(instance: Instance) -> dict[str, Any]:
    """`khronos status --json` as the operator sees it."""
    done = instance.khronos("status", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_a_worker_started_while_redis_is_down_polls_alone_then_rejoins(
    make_instance: Any, redis_server: RedisServer, figures: Callable[..., None]
) -> None:
    """Redis down at start: within one lease the worker polls alone and answers, saying
    `degraded` and why; once Redis answers it takes the lease, leaves local limits and says
    `ready`."""
    redis_server.stop()
    try:
        config = f'redis_url = "{redis_server.url}"\n' + FAST_CONFIG
        instance: Instance = make_instance(config=config).start(ready=False)
        wait_for(lambda: instance.status().get("poller") is True, timeout=20)
        seen = status(instance)
        assert seen["state"] == "degraded", seen
        assert seen["worker"]["redis"] == "lost" and seen["worker"]["lease"] == "alone"
        assert any(r.startswith("redis unreachable") for r in seen["worker"]["reasons"])
        for i in range(5):
            instance.push(9100 + i, f"redis is down {i}")
        wait_for(lambda: answered(instance, 5), timeout=30)
    finally:
        redis_server.start()
    wait_for(lambda: instance.status().get("state") == "ready", timeout=20)
    back = status(instance)
    assert back["worker"]["redis"] == "ok" and back["worker"]["lease"] == "held"
    assert back["worker"]["poller"] is True and back["worker"]["reasons"] == []
    instance.push(9200, "redis is back")
    wait_for(lambda: answered(instance, 6), timeout=30)
    assert instance.ledger()["duplicates"] == []
    figures("degraded: redis down at start", down=seen["worker"]["reasons"], back=back["state"])


def test_status_is_degraded_while_any_breaker_is_open(instance: Instance) -> None:
    """An open breaker (here `database`, forced by the operator) makes `khronos status` say
    `degraded` with the breaker named; closing it makes it `ready` again."""
    assert status(instance)["state"] == "ready"
    for name in ("database", "telegram-api"):
        done = instance.khronos("breakers", "open", name, "--for", "1m")
        assert done.returncode == 0, done.stderr
    seen = status(instance)
    assert seen["state"] == "degraded"
    assert seen["worker"]["reasons"] == ["breaker telegram-api open", "breaker database open"]
    assert seen["reasons"] == seen["worker"]["reasons"]
    shown = " ".join(instance.khronos("status").stdout.split())
    assert "state degraded" in shown and "why breaker database open" in shown, shown
    for name in ("database", "telegram-api"):
        assert instance.khronos("breakers", "reset", name).returncode == 0
    assert status(instance)["state"] == "ready"
