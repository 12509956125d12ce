"""Alerts through the real worker: the sandbox's Telegram stand-in holds the operator chat, and
every alert is read there as the operator would read it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from khronos_cli.control.client import ControlClient
from khronos_cli.sandbox.telegram import OPERATOR_CHAT as OPERATOR  # where --sandbox alerts go
from tests.instance import FAST_CONFIG, Instance, crashing
from tests.support import Collector, RedisServer, wait_for

pytestmark = pytest.mark.timeout(90)

ALERTS = '[alerts]\ngroup_window = "0.5s"\n'


def alerts(instance: Instance, containing: str = "") -> list[str]:
    """The texts the operator chat received that contain ``containing``."""
    return [item["text"] for item in instance.operator() if containing in item["text"]]


def test_an_opened_breaker_is_one_alert_and_its_close_another(make_instance: Any) -> None:
    """`khronos breakers open` reaches the operator chat once, with the operator's reason; the
    reset that follows is one "closed again" alert saying how long it was open and why; neither
    counts as a delivery to users in the sandbox's ledger."""
    instance: Instance = make_instance(operator_chat=True, config=FAST_CONFIG + ALERTS).start()
    done = instance.khronos("breakers", "open", "anthropic-api", "--reason", "maintenance")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: alerts(instance, "breaker anthropic-api opened"), timeout=15)
    done = instance.khronos("breakers", "reset", "anthropic-api")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: alerts(instance, "closed again"), timeout=15)
    opened = alerts(instance, "anthropic-api opened")
    assert len(opened) == 1, instance.operator()
    assert "forced open by the operator: maintenance" in opened[0]
    closed = alerts(instance, "closed again")
    assert len(closed) == 1 and "it began: forced open by the operator" in closed[0], closed
    assert instance.deliveries() == [] and instance.ledger()["unmatched"] == 0  # not answers


def test_a_flapping_breaker_is_one_grouped_alert(make_instance: Any) -> None:
    """A breaker forced open and reset seven times within the group window reaches the operator
    as one message counting the openings and saying the breaker's state now."""
    window = '[alerts]\ngroup_window = "3s"\n'
    instance: Instance = make_instance(operator_chat=True, config=FAST_CONFIG + window).start()
    with ControlClient(instance.state_dir) as control:
        for _ in range(7):
            control.post("/breakers/anthropic-api/open", {"reason": "flap"})
            control.post("/breakers/anthropic-api/reset", {})
    wait_for(lambda: alerts(instance, "anthropic-api"), timeout=15)
    grouped = alerts(instance, "anthropic-api")
    assert len(grouped) == 1, grouped
    assert "opened 7 times in" in grouped[0] and "closed now" in grouped[0], grouped


def test_a_lost_redis_is_one_degraded_alert_and_its_return_another(
    make_instance: Any, redis_server: RedisServer
) -> None:
    """Redis killed under a running worker: the operator hears "degraded (redis)" once, and
    once more when it answers again, with how long it was gone."""
    redis_server.start()
    config = f'redis_url = "{redis_server.url}"\n' + FAST_CONFIG + ALERTS
    instance: Instance = make_instance(operator_chat=True, config=config).start()
    redis_server.stop()
    try:
        wait_for(lambda: alerts(instance, "degraded (redis) now"), timeout=20)
    finally:
        redis_server.start()
    wait_for(lambda: alerts(instance, "degraded (redis) recovered after"), timeout=20)
    assert len(alerts(instance, "degraded (redis)")) == 2, alerts(instance)


def test_a_crash_loop_reaches_the_operator_while_no_worker_runs(make_instance: Any) -> None:
    """A worker that crashes at every start: the supervisor tells the operator chat once that
    it is crash-looping (with the exit and the last line), though no worker ever runs."""
    supervisor = '[supervisor]\nrestart_delay = "0.2s"\nmax_restart_delay = "0.5s"\n'
    config = FAST_CONFIG + ALERTS + supervisor + "crashloop_after = 2\n"
    instance = crashing(make_instance(operator_chat=True, config=config)).start(ready=False)
    wait_for(lambda: instance.supervisor().get("restarts", 0) >= 4, timeout=30)
    told = alerts(instance, "crash-looping")
    assert len(told) == 1, instance.operator()
    assert "2 fast failures in a row" in told[0] and "code 1" in told[0], told
    assert instance.supervisor()["crashloop_alert"] == {str(OPERATOR): "sent"}


def test_alerts_held_while_telegram_is_down_arrive_when_it_returns(make_instance: Any) -> None:
    """A breaker opened during a Telegram outage: its alert waits in the outbox and arrives
    once Telegram answers again, with one saying how long Telegram was down."""
    instance: Instance = make_instance(operator_chat=True, config=FAST_CONFIG + ALERTS).start()
    with ControlClient(instance.state_dir) as control:
        control.post("/outages", {"name": "telegram-api", "mode": "down", "for": 3})
        control.post("/breakers/anthropic-api/open", {"reason": "while telegram was down"})
        wait_for(lambda: not control.get("/outages"), timeout=15)
    returned = len(instance.operator())
    wait_for(lambda: alerts(instance, "anthropic-api opened"), timeout=30)
    wait_for(lambda: alerts(instance, "Telegram was down for"), timeout=30)
    items = instance.operator()
    assert len(alerts(instance, "anthropic-api opened")) == 1, items
    assert len({i["text"] for i in items}) == len(items), items  # nothing sent twice
    assert returned == 0, "nothing reached Telegram during the outage"
    assert "Telegram was down for" in items[-1]["text"], items


def test_alerts_test_sends_one_and_says_where_it_went(make_instance: Any) -> None:
    """`khronos alerts test --json` puts one test alert in the operator chat and one JSON body
    on the webhook, and reports both sent; a second within the per-chat rate is held (exit 1);
    without any [alerts] target it refuses, exit 1, saying why."""
    with Collector() as hook:
        config = ALERTS + f'webhook_url = "{hook.url}"\nper_chat = ["1/min"]\n'
        instance: Instance = make_instance(operator_chat=True, config=FAST_CONFIG + config)
        done = instance.start().khronos("alerts", "test", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert [(c["chat_id"], c["state"]) for c in report["chats"]] == [(OPERATOR, "sent")]
        assert report["webhook"] == {"state": "sent", "status": 204}
        assert len(alerts(instance, "test alert: sent by `khronos alerts test`")) == 1
        (body,) = hook.bodies
        assert body["alerts"][0]["kind"] == "test" and "test alert" in body["text"]
    again = instance.khronos("alerts", "test")
    assert again.returncode == 1 and f"chat {OPERATOR}: held" in again.stdout, again.stdout
    shown = instance.status()["alerts"]
    assert shown["chats"] == [OPERATOR] and shown["messages"] == 1 and shown["held"] == 1
    bare: Instance = make_instance("b", config=FAST_CONFIG).start()
    refused = bare.khronos("alerts", "test")
    assert refused.returncode == 1 and "nothing to send a test to" in refused.stderr


def test_a_killed_worker_is_told_at_the_next_start(make_instance: Any) -> None:
    """A worker killed with SIGKILL: the supervisor restarts it, and the new worker tells the
    operator once that the last run did not stop cleanly, with how it ended."""
    instance: Instance = make_instance(operator_chat=True, config=FAST_CONFIG + ALERTS).start()
    worker = instance.status()["pid"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: instance.status().get("pid") not in (None, worker), timeout=30)
    wait_for(lambda: alerts(instance, "did not stop cleanly"), timeout=15)
    told = alerts(instance, "did not stop cleanly")
    assert len(told) == 1 and "the worker was killed by SIGKILL" in told[0], told


def test_the_operator_chat_hears_an_outage_drill(make_instance: Any) -> None:
    """`khronos outage drill anthropic-api` with users talking: the sandbox's operator chat
    gets the breaker's alerts, and the users' ledger is still exactly once, alerts apart."""
    instance: Instance = make_instance(operator_chat=True, config=FAST_CONFIG + ALERTS).start()
    command = ["outage", "drill", "anthropic-api", "--for", "2s"]
    command += ["--expect-recovery-within", "20s", "--state-dir", str(instance.state_dir)]
    drill = subprocess.Popen(
        [sys.executable, "-m", "khronos_cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: instance.status().get("outages"), timeout=30)
    for i in range(4):
        instance.push(7100 + i, f"during the drill {i}")
    assert drill.wait(timeout=60) == 0
    wait_for(lambda: alerts(instance, "breaker anthropic-api opened"), timeout=20)
    wait_for(lambda: instance.ledger()["answered"] == 4, timeout=30)
    ledger = instance.ledger()
    assert ledger["unexpected"] == [] and ledger["unmatched"] == 0 and ledger["duplicates"] == []


def test_an_outbox_backlog_is_told_when_it_builds_and_when_it_clears(
    make_instance: Any,
) -> None:
    """Answers piling up for a chat Telegram holds in flood control: one alert once the outbox
    holds `backlog` messages, one more when they are sent."""
    config = FAST_CONFIG + ALERTS + "backlog = 3\n"
    instance: Instance = make_instance(operator_chat=True, config=config).start()
    chat = 7200
    held = {"chat_id": chat, "retry_after": 2, "seconds": 2}
    instance.admin.post("/_sandbox/flood/force", json=held).raise_for_status()
    for i in range(4):
        instance.push(chat, f"held back {i}")
    wait_for(lambda: alerts(instance, "outbox backlog over the threshold"), timeout=20)
    wait_for(lambda: instance.ledger()["answered"] == 4, timeout=30)
    wait_for(lambda: alerts(instance, "outbox backlog cleared"), timeout=20)
    assert len(alerts(instance, "outbox backlog")) == 2, instance.operator()
