"""The duplicate window, measured: how long a message Telegram accepted stays unmarked in the
outbox (a kill -9 then sends it again), under Telegram's own limits and under overload, and a
series of kill -9 at random moments of steady traffic whose every duplicate is a kill that
landed in that window.

Telegram's acceptance is the stand-in's clock when it records the delivery; the mark is the
outbox row's ``finished_at``, stamped inside the transaction that marks it (its COMMIT follows).
Both processes read the same machine's clocks: the stand-in's monotonic time is turned into
wall time with the offset the test reads once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.instance import FAST_CONFIG, Instance, alive
from tests.reliability.harness import (
    answered,
    flood_off,
    lift_limits,
    percentiles,
    push_all,
    size,
)
from tests.support import wait_for

WINDOW_BOUND = 2.0  # seconds: a mark queued behind something slow would show up past this
KILLS = size(3, 20)
BATCH = 20  # messages pushed (in as many chats) before each kill

pytestmark = pytest.mark.timeout(900 if KILLS > 3 else 180)


def window(instance: Instance) -> list[float]:
    """For each message sent: seconds from Telegram accepting it to the outbox marking it."""
    offset = time.time() - time.monotonic()
    accepted = {(d["chat_id"], d["message_id"]): d["at"] + offset for d in instance.deliveries()}
    with sqlite3.connect(instance.state_dir / "khronos.db") as db:
        rows = db.execute(
            "SELECT chat_id, telegram_message_id, finished_at FROM outbox WHERE state = 'sent'"
        ).fetchall()
    marked = {(chat, message): at for chat, message, at in rows}
    assert marked.keys() == accepted.keys(), "a delivery without its mark, or a mark without one"
    return [marked[key] - accepted[key] for key in accepted]


def measure(instance: Instance, count: int, chats: int) -> dict[str, Any]:
    """A burst of ``count`` updates in ``chats`` chats, answered; the window's figures."""
    flood_off(instance)
    started = time.perf_counter()
    asyncio.run(push_all(instance.sandbox()["telegram_base_url"], count, chats))
    wait_for(lambda: answered(instance, count), timeout=300, interval=0.25)
    seconds = time.perf_counter() - started
    samples = window(instance)
    assert instance.ledger()["duplicates"] == []
    assert min(samples) > -0.005 and max(samples) < WINDOW_BOUND, percentiles(samples)
    return {"messages": count, "per_second": round(count / seconds, 1), **percentiles(samples)}


def test_the_duplicate_window_under_telegrams_limits_and_under_overload(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """Every message Telegram accepted is marked sent within a bounded time: at Telegram's
    30 msg/s and in an overload burst with the limits lifted (p50/p99/max recorded)."""
    measured = {}
    for name, config, count, chats in (
        ("telegram_limits", FAST_CONFIG, size(60, 900), size(20, 300)),
        ("overload", lift_limits(), size(400, 3000), size(40, 300)),
    ):
        instance: Instance = make_instance(name, config=config).start()
        measured[name] = measure(instance, count, chats)
        instance.close()  # the next measurement has the machine to itself
    figures("duplicate window: accepted by Telegram -> marked sent", **measured)


def kill_when(instance: Instance, deliveries: int) -> float:
    """SIGKILL the worker once the stand-in has accepted ``deliveries`` messages; when it did.
    Returns once the supervisor's next worker answers."""
    wait_for(
        lambda: instance.admin.get("/_sandbox/stats").json()["deliveries"] >= deliveries,
        timeout=60,
        interval=0.002,
    )
    worker = instance.status()["pid"]
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not alive(worker), timeout=10)
    wait_for(lambda: instance.status().get("pid") not in (None, worker), timeout=60)
    return killed


def test_kill_9_at_random_moments_duplicates_only_what_the_window_held(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """SIGKILL of the worker at random moments of steady sending: nothing is lost, and each
    duplicate is a message Telegram accepted less than the window bound before a kill."""
    config = FAST_CONFIG + '[supervisor]\nrestart_delay = "0.05s"\nmax_restart_delay = "0.1s"\n'
    instance: Instance = make_instance(config=config).start()
    flood_off(instance)
    rng = random.Random(11)
    kills: list[float] = []
    for cycle in range(KILLS):
        sent = instance.admin.get("/_sandbox/stats").json()["deliveries"]
        for i in range(BATCH):
            instance.push(40_000 + i, f"cycle {cycle} message {i}")
        kills.append(kill_when(instance, sent + rng.randint(1, BATCH - 2)))
    wait_for(lambda: answered(instance, KILLS * BATCH), timeout=120, interval=0.25)
    ledger = instance.ledger()
    deliveries = instance.deliveries()
    gaps = []
    for message_id in ledger["duplicates"]:
        first = min(d["at"] for d in deliveries if d["reply_to_message_id"] == message_id)
        gaps.append(min((k - first for k in kills if k >= first), default=float("inf")))
    figures(
        "duplicate window: kill -9 at random moments",
        kills=KILLS,
        messages=KILLS * BATCH,
        duplicates=len(ledger["duplicates"]),
        accepted_before_kill_ms=sorted(round(g * 1000, 1) for g in gaps),
    )
    assert ledger["unanswered"] == [] and ledger["unmatched"] == 0
    assert all(0 <= gap < WINDOW_BOUND for gap in gaps), gaps
