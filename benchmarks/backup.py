"""A backup of a 100 MB ``khronos.db`` while the bot answers: what users wait, and how fast.

One worker (all its resilience on, the limiters lifted, the Anthropic stand-in without latency,
``synchronous=FULL``) over a database filled to ``--mb`` MB of conversation turns. After 50 warm-up
messages, messages arrive at a steady 25 a second, twice: once with no backup running, once while
the worker writes copies back to back (``POST /backup`` on the control socket, what ``khronos
backup`` asks; every message of that phase lands during a copy). The
stand-in's clock on both ends gives message-to-answer p50/p99.

Then the copy's throughput on the same file, the bot idle: ``khronos backup`` (the worker's
online copy, default ``pages_per_step``), beside the ``sqlite3`` command line's ``.backup`` (when
installed; otherwise Python's ``sqlite3`` backup with ``pages=-1``, one step, is the anchor) and
Python's one-step backup; each the best of ``--rounds``, MB/s of the file's size.

    .venv/bin/python benchmarks/backup.py [--mb 100] [--messages 500] [--rounds 3] [--bandwidth N]

Goal (issue 16): the p99 during a backup within 1.5x the p99 without. ``--bandwidth none`` shows
what an unpaced copy costs the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import sandbox, wait_until
from benchmarks.pipeline import LIFTED, delivered, latencies, push
from khronos_cli.bot.store import Store
from khronos_cli.control.client import ControlClient
from khronos_cli.settings import BackupSettings

RATE = 25.0  # messages per second, below the bot's capacity
GOAL = 1.5
WARMUP = 50


def fill(path: Path, megabytes: int) -> None:
    """A khronos.db made by the store itself with ``megabytes`` MB of turns, 50 per chat (under
    retention's 200 per chat, dated now: the worker's start prunes none)."""

    async def create() -> None:  # created and migrated as the bot does it
        await (await Store.open(path)).aclose()

    asyncio.run(create())
    rows, now = megabytes * 1_000_000 // 2_100, time.time()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO turns (chat_id, role, text, created_at) VALUES (?, 'user', ?, ?)",
            ((900_000 + i // 50, os.urandom(1000).hex(), now) for i in range(rows)),
        )
    db.close()


def khronos(state: Path, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "khronos_cli", *args, "--state-dir", str(state), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, object] = json.loads(out.stdout)
    return data


def phase(admin: httpx.Client, first: int, count: int) -> list[float]:
    """``count`` messages at RATE; each one's seconds to its answer."""
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / RATE - time.monotonic()))
        push(admin, first + i)
    wait_until(lambda: delivered(admin) >= first + count, 120, "the answers")
    return sorted(latencies(admin, first))


def p(samples: list[float], q: float) -> float:
    return samples[min(len(samples) - 1, int(q * len(samples)))] * 1000


def backups_meanwhile(state: Path, target: Path, stop: threading.Event) -> list[float]:
    """Copies back to back through the control socket (what ``khronos backup`` asks, without
    a process start between two) until ``stop``; each copy's MB/s."""
    speeds = []
    with ControlClient(state, timeout=600) as control:
        while not stop.is_set():
            path = target / "during.db"
            copy = control.post("/backup", {"path": str(path)})
            speeds.append(copy["size"] / 1e6 / copy["duration_s"])
            path.unlink()
            path.with_name("during.db.sha256").unlink()
    return speeds


def timed(fn: object, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--bandwidth", default=None, help="[backup] bandwidth: MiB/s or none (default: khronos's)"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khronos-bench-backup-") as tmp:
        root = Path(tmp)
        state, target = root / "state", root / "copies"
        state.mkdir(mode=0o700)
        target.mkdir(mode=0o700)
        database = state / "khronos.db"
        fill(database, options.mb)
        size = database.stat().st_size
        backup = '[backup]\ninterval = "none"\n'
        if options.bandwidth is not None:
            bandwidth = options.bandwidth if options.bandwidth.isdigit() else '"none"'
            backup += f"bandwidth = {bandwidth}\n"
        (state / "khronos.toml").write_text(LIFTED + backup)
        with sandbox(root, "--llm-latency", "0", "--no-flood-limits") as stand_ins:
            env = {**os.environ, **stand_ins.env, "KHRONOS_HTTP_PORT": "0"}
            worker = subprocess.Popen(
                [sys.executable, "-m", "khronos_cli.runtime.worker", "--state-dir", str(state)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            admin = httpx.Client(base_url=stand_ins.telegram, timeout=30)
            try:
                wait_until(lambda: (state / "khronos.sock").exists(), 60, "the worker")
                wait_until(lambda: khronos(state, "status").get("state") == "ready", 60, "ready")
                n = options.messages
                phase(admin, 0, WARMUP)  # the first answers warm the caches: not counted
                quiet = phase(admin, WARMUP, n)
                stop = threading.Event()
                speeds: list[float] = []
                runner = threading.Thread(
                    target=lambda: speeds.extend(backups_meanwhile(state, target, stop))
                )
                runner.start()
                busy = phase(admin, WARMUP + n, n)
                stop.set()
                runner.join()

                ours_s, command_s = float("inf"), float("inf")
                for _ in range(options.rounds):  # the worker's own time, and the command's
                    began = time.perf_counter()
                    copy = khronos(state, "backup", str(target / "ours.db"))
                    command_s = min(command_s, time.perf_counter() - began)
                    ours_s = min(ours_s, float(str(copy["duration_s"])))
                    (target / "ours.db").unlink()
                    (target / "ours.db.sha256").unlink()
            finally:
                admin.close()
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)
        cli = shutil.which("sqlite3")

        def anchor() -> None:
            copy = target / "anchor.db"
            subprocess.run([str(cli), str(database), f".backup '{copy}'"], check=True)
            copy.unlink()

        def one_step() -> None:
            copy = target / "python.db"
            with sqlite3.connect(database) as source, sqlite3.connect(copy) as into:
                source.backup(into, pages=-1)
            into.close()
            copy.unlink()

        python_s = timed(one_step, options.rounds)
        anchor_s = timed(anchor, options.rounds) if cli else python_s
    mb = size / 1e6
    anchor_name = "`sqlite3 .backup` (CLI)" if cli else "Python backup, pages=-1 (no sqlite3 CLI)"
    pace = options.bandwidth or BackupSettings().bandwidth
    print(
        f"\n{mb:.0f} MB khronos.db; [backup] bandwidth = {pace}; {n} messages at "
        f"{RATE:g}/s per phase; {len(speeds)} backups "
        f"back to back during the second; copies best of {options.rounds}; "
        f"{os.cpu_count()}-core machine\n"
    )
    print("| message to answer | p50 ms | p99 ms | p99 × without |")
    print("|---|---:|---:|---:|")
    print(f"| no backup | {p(quiet, 0.5):.1f} | {p(quiet, 0.99):.1f} | 1.00 |")
    ratio = p(busy, 0.99) / p(quiet, 0.99)
    print(f"| during backups | {p(busy, 0.5):.1f} | {p(busy, 0.99):.1f} | {ratio:.2f} |")
    print("\n| copy of the same file | seconds | MB/s | speed × anchor |")
    print("|---|---:|---:|---:|")
    rows = [
        ("`khronos backup`: the worker's copy (bot idle)", ours_s),
        ("`khronos backup`: the whole command (bot idle)", command_s),
        (
            f"`khronos backup`: the worker's copy during traffic (median of {len(speeds)})",
            mb / statistics.median(speeds) if speeds else float("nan"),
        ),
        (anchor_name, anchor_s),
        ("Python backup, pages=-1", python_s),
    ]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {mb / seconds:.0f} | {anchor_s / seconds:.2f} |")
    met = ratio <= GOAL
    print(f"\np99 during a backup within {GOAL}x without: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
