"""The SQLite file made read-only mid-run, and a database outage: the ``database`` breaker opens,
updates are not confirmed to Telegram (it keeps them), and nothing is lost or answered twice.

"Read-only" is made real with ``chattr +i`` on ``khronos.db`` and its WAL: an immutable file
refuses every write, even root's (file modes do not stop root), so the live worker's commits fail
with ``SQLITE_IOERR`` while reads still work. The ``-shm`` index is left writable: it is memory
mapped, and an immutable one kills the process with SIGBUS, which is another fault. Needs root
and a filesystem with the immutable flag (ext4, xfs, btrfs; not tmpfs): elsewhere that scenario
is skipped and the outage scenario (``khronos outage start database --mode errors``) remains.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.instance import FAST_CONFIG, Instance
from tests.reliability.harness import FULL, Events, answered, size
from tests.support import wait_for

BEFORE = size(10, 100)
DURING = size(20, 200)

pytestmark = pytest.mark.timeout(600 if FULL else 120)

DB_CONFIG = FAST_CONFIG + (
    '[breakers.database]\nreset_timeout = "1s"\nvolume_threshold = 3\n'
    'health_check_interval = "0.5s"\n'
)


def _chattr(flag: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """The files immutable for the block; always undone (or pytest could not clean up)."""
    made = _chattr("+i", *paths)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    try:
        yield
    finally:
        undone = _chattr("-i", *paths)
        assert undone.returncode == 0, undone.stderr


def _pending(instance: Instance) -> int:
    return int(instance.admin.get("/_sandbox/stats").json()["pending_update_count"])


def _run_fault(
    instance: Instance, fault: Callable[[], contextlib.AbstractContextManager[Any]]
) -> dict[str, Any]:
    """Traffic before, during and after ``fault``; the figures of what happened."""
    for i in range(BEFORE):
        instance.push(400_000 + i, f"before {i}")
    wait_for(lambda: answered(instance, BEFORE), timeout=60, interval=0.1)
    events = Events(instance)
    try:
        with fault():
            offset = instance.status()["offset"]
            started = time.perf_counter()
            for i in range(DURING):
                instance.push(410_000 + i, f"during {i}")
            wait_for(lambda: "open" in events.breaker("database"), timeout=60, interval=0.05)
            # While the fault lasts the updates stay at Telegram: the offset does not move past
            # an update that is not journaled.
            wait_for(lambda: _pending(instance) == DURING, timeout=30, interval=0.05)
            held = {
                "pending_at_telegram": _pending(instance),
                "offset_before": offset,
                "offset_during": instance.status()["offset"],
                "answered_during": instance.ledger()["answered"] - BEFORE,
            }
            fault_seconds = time.perf_counter() - started
        healed = time.perf_counter()
        wait_for(lambda: answered(instance, BEFORE + DURING), timeout=90, interval=0.1)
        recovery = time.perf_counter() - healed
        wait_for(lambda: "close" in events.breaker("database"), timeout=30, interval=0.05)
    finally:
        events.close()
    ledger = instance.ledger()
    return {
        **held,
        "before": BEFORE,
        "during": DURING,
        "fault_seconds": round(fault_seconds, 2),
        "seconds_from_heal_to_last_answer": round(recovery, 2),
        "answered": ledger["answered"],
        "duplicates": len(ledger["duplicates"]),
        "lost": len(ledger["unanswered"]),
        "unmatched": ledger["unmatched"],
        "pending_at_end": _pending(instance),
        "breaker_transitions": events.breaker("database"),
    }


def _check(figures: dict[str, Any]) -> None:
    assert figures["pending_at_telegram"] == DURING and figures["answered_during"] == 0
    assert figures["offset_during"] == figures["offset_before"]
    assert figures["answered"] == BEFORE + DURING
    assert figures["duplicates"] == 0 and figures["unmatched"] == 0
    assert figures["pending_at_end"] == 0


def test_the_sqlite_file_made_read_only_mid_run_loses_nothing(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """khronos.db made immutable mid-run: the database breaker opens, Telegram keeps the
    updates, and once writable again each is answered exactly once."""
    instance: Instance = make_instance(config=DB_CONFIG).start()
    db = instance.state_dir / "khronos.db"
    wal = instance.state_dir / "khronos.db-wal"
    assert db.exists() and wal.exists()
    result = _run_fault(instance, lambda: read_only(db, wal))
    figures("fault: SQLite file read-only (chattr +i)", **result)
    _check(result)
    assert "SQLITE_IOERR" in instance.log() or "disk I/O error" in instance.log()


def test_a_database_outage_mid_run_loses_nothing(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """`khronos outage start database --mode errors` mid-run: the same guarantees."""
    instance: Instance = make_instance(config=DB_CONFIG).start()

    @contextlib.contextmanager
    def outage() -> Iterator[None]:
        started = instance.khronos("outage", "start", "database", "--mode", "errors", "--for", "5m")
        assert started.returncode == 0, started.stderr
        try:
            yield
        finally:
            stopped = instance.khronos("outage", "stop", "database")
            assert stopped.returncode == 0, stopped.stderr

    result = _run_fault(instance, outage)
    figures("fault: database outage (errors)", **result)
    _check(result)
