"""Alerts through the real worker: the sandbox's Telegram stand-in holds the operator chat, and
every alert is read there as the operator would read it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.instance import FAST_CONFIG, Instance
from tests.support import wait_for

pytestmark = pytest.mark.timeout(90)

OPERATOR = 4242
ALERTS = f'[alerts]\nchat_ids = [{OPERATOR}]\ngroup_window = "0.5s"\n'


def alerts(instance: Instance, containing: str = "") -> list[str]:
    """The texts the operator chat received that contain ``containing``."""
    return [
        item["text"]
        for item in instance.deliveries()
        if item["chat_id"] == OPERATOR and containing in item["text"]
    ]


def test_an_opened_breaker_is_one_alert_and_its_close_another(make_instance: Any) -> None:
    """`khronos breakers open` reaches the operator chat once, with the operator's reason; the
    reset that follows is one "closed again" alert saying how long it was open and why."""
    instance: Instance = make_instance(config=FAST_CONFIG + ALERTS).start()
    done = instance.khronos("breakers", "open", "anthropic-api", "--reason", "maintenance")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: alerts(instance, "breaker anthropic-api opened"), timeout=15)
    done = instance.khronos("breakers", "reset", "anthropic-api")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: alerts(instance, "closed again"), timeout=15)
    opened = alerts(instance, "anthropic-api opened")
    assert len(opened) == 1, instance.deliveries()
    assert "forced open by the operator: maintenance" in opened[0]
    closed = alerts(instance, "closed again")
    assert len(closed) == 1 and "it began: forced open by the operator" in closed[0], closed
