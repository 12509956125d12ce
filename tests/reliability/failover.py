"""A Redis failover under traffic, measured: two khronos replicas, users writing and bulk sends
queued while a fault moves the bot's keys to another Redis node; the ledger counts the rest.

:func:`measure` runs one scenario: ``fault()`` breaks Redis and returns when the new master (or
slot owner) is in place; the figures are what RELIABILITY.md records: messages lost and answered
twice, sliding 1 s windows over Telegram's 30/s, whether `degraded` was shown, and how long after
the new master the replicas were `ready` again.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.instance import FAST_CONFIG, Instance
from tests.reliability.harness import size
from tests.support import wait_for

BOT_KEY = "khronos:{7000000001}:poller"  # a key of the sandbox bot's namespace (its slot)


def pair(make_instance: Any, url: str, name: str = "r") -> list[Instance]:
    """Two replicas (no supervisor) on one sandbox and the Redis at ``url``."""
    config = f'redis_url = "{url}"\n' + FAST_CONFIG
    first = make_instance(
        f"{name}0", config=config, external_sandbox=True, args=("--no-supervise",)
    )
    second = make_instance(
        f"{name}1", config=config, external_sandbox=True, sandbox_of=first, args=("--no-supervise",)
    )
    return [first.start(), second.start()]


def windows_over(times: list[float], limit: int, width: float = 1.0) -> int:
    """Sliding windows of ``width`` s holding more than ``limit`` sends (one per offender)."""
    ordered = sorted(times)
    return sum(bisect.bisect_left(ordered, t + width) - i > limit for i, t in enumerate(ordered))


class States(threading.Thread):
    """Every replica's state, sampled every 50 ms: ``(monotonic, (state, ...))``."""

    def __init__(self, group: list[Instance]) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            states = tuple(str(r.status().get("state")) for r in self.group)
            self.samples.append((time.monotonic(), states))

    def degraded_between(self, start: float, end: float) -> bool:
        return any("degraded" in s for t, s in self.samples if start <= t <= end)

    def ready_from(self, start: float) -> float | None:
        """The first sample after ``start`` from which every replica stayed ready."""
        since = None
        for t, states in self.samples:
            if t < start:
                continue
            if all(s == "ready" for s in states):
                since = since if since is not None else t
            else:
                since = None
        return since


def measure(group: list[Instance], fault: Callable[[], float]) -> dict[str, Any]:
    """Users write 20 messages (200 in the full run; one every 0.1 s) and 60 bulk sends (600)
    are queued across both replicas while ``fault`` runs; then everything is counted."""
    messages, bulk = size(20, 200), size(60, 600)
    wait_for(lambda: sum(bool(r.status().get("poller")) for r in group) == 1, timeout=30)
    sandbox = group[0]
    start = sandbox.ledger()["sent"]
    delivered = len(sandbox.deliveries())
    floods = sandbox.admin.get("/_sandbox/stats").json()["flood_rejections"]
    states = States(group)
    states.start()

    def users() -> None:
        for i in range(messages):
            sandbox.push(20_000 + i, f"during the fault {i}")
            time.sleep(0.1)  # the users' pace, not a wait for a condition

    writer = threading.Thread(target=users, daemon=True)
    writer.start()
    for i in range(bulk):
        body = {"chat_id": 30_000 + i % max(1, bulk // 3), "text": f"bulk {i}"}
        assert group[i % 2].public("POST", "/messages", json=body).status_code == 202
    killed = time.monotonic()
    elected = fault()
    writer.join()
    try:
        wait_for(lambda: states.ready_from(elected) is not None, timeout=30)
    except AssertionError:
        why = [(r.status().get("state"), r.status().get("reasons")) for r in group]
        raise AssertionError(f"not ready 30 s after the new master: {why}") from None
    finally:
        states.done.set()
        states.join()
    ready = states.ready_from(elected)

    def settled() -> bool:
        ledger = sandbox.ledger()
        done = ledger["sent"] - start == messages and not ledger["unanswered"]
        return done and len(sandbox.deliveries()) - delivered >= messages + bulk

    wait_for(settled, timeout=90)
    ledger = sandbox.ledger()
    sends = [d["at"] for d in sandbox.deliveries()[delivered:]]
    return {
        "messages": messages,
        "bulk_sends": bulk,
        "lost": len(ledger["unanswered"]),
        "answered_twice": len(ledger["duplicates"]),
        "windows_over_30_per_s": windows_over(sends, 30),
        "telegram_429s": sandbox.admin.get("/_sandbox/stats").json()["flood_rejections"] - floods,
        "fault_to_new_master_s": round(elected - killed, 2),
        "new_master_to_ready_s": None if ready is None else round(max(0.0, ready - elected), 2),
        "degraded_shown": states.degraded_between(killed, ready or time.monotonic()),
    }
