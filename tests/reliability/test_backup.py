"""A backup taken under a burst of updates: consistent, and restorable within the one window a
restore opens (README, "Restoring a backup")."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.instance import Instance
from tests.reliability.harness import FULL, answered, flood_off, lift_limits, push_all, size
from tests.support import wait_for

UPDATES = size(1000, 10_000)

pytestmark = pytest.mark.timeout(900 if FULL else 180)


def _in_flight(copy: Path) -> tuple[dict[str, int], set[int]]:
    """The copy's rows checked for sense, and the message ids it holds in flight: journaled
    without an answer, or answered with a part still pending."""
    db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        counts = dict(db.execute("SELECT state, count(*) FROM updates GROUP BY state").fetchall())
        orphans = db.execute(
            "SELECT count(*) FROM outbox WHERE update_id NOT IN (SELECT update_id FROM updates)"
        ).fetchone()[0]
        unsent_done = db.execute(
            "SELECT count(*) FROM updates u WHERE state = 'done' AND NOT EXISTS (SELECT 1 FROM"
            " outbox o WHERE o.update_id = u.update_id AND o.state IN ('sent', 'failed'))"
        ).fetchone()[0]
        assert orphans == 0 and unsent_done == 0, (orphans, unsent_done)
        payloads = db.execute(
            "SELECT payload FROM updates WHERE state != 'done' OR update_id IN"
            " (SELECT update_id FROM outbox WHERE state = 'pending')"
        ).fetchall()
    finally:
        db.close()
    return counts, {int(json.loads(p)["message"]["message_id"]) for (p,) in payloads}


def test_a_backup_under_a_burst_is_consistent_and_restores_within_its_window(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """A copy taken while 1,000 updates are answered passes integrity_check with sane rows; once
    restored, the bot answers again only what the copy held in flight (never what it had sent),
    loses nothing Telegram still holds, and answers new messages."""
    config = lift_limits() + '[backup]\ninterval = "none"\n'
    instance: Instance = make_instance(config=config, external_sandbox=True).start()
    flood_off(instance)
    base = instance.sandbox()["telegram_base_url"]
    pusher = threading.Thread(target=lambda: asyncio.run(push_all(base, UPDATES, UPDATES // 10)))
    pusher.start()
    wait_for(lambda: instance.status().get("updates_accepted", 0) >= UPDATES // 5, timeout=60)
    taken = instance.khronos("backup", "--json")
    accepted = instance.status()["updates_accepted"]
    pusher.join(timeout=120)
    assert taken.returncode == 0, taken.stderr
    copy = json.loads(taken.stdout)
    wait_for(lambda: answered(instance, UPDATES), timeout=600 if FULL else 120, interval=0.25)
    assert instance.ledger()["duplicates"] == []

    counts, in_flight = _in_flight(Path(copy["path"]))
    rows = sum(counts.values())
    assert UPDATES // 5 <= rows <= accepted, (counts, accepted)

    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    restored = instance.khronos("restore", copy["path"])
    assert restored.returncode == 0, restored.stderr
    instance.start()

    def settled() -> bool:
        status = instance.status()
        return status.get("jobs_active") == 0 and status.get("messages_queued") == 0

    wait_for(settled, timeout=120, interval=0.1)
    instance.push(1, "after the restore")
    wait_for(lambda: answered(instance, UPDATES + 1), timeout=60, interval=0.1)
    ledger = instance.ledger()
    figures(
        "backup: under a burst, then restored",
        updates=UPDATES,
        accepted_when_taken=accepted,
        rows_in_copy=counts,
        copy_mb=round(copy["size"] / 1e6, 2),
        copy_seconds=copy["duration_s"],
        in_flight_in_copy=len(in_flight),
        answered_again_after_restore=len(ledger["duplicates"]),
        unanswered=len(ledger["unanswered"]),
    )
    assert set(ledger["duplicates"]) <= in_flight
    assert ledger["unanswered"] == [] and ledger["unmatched"] == 0
