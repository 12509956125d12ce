"""Updates answered per second end to end, and memory, beside a python-telegram-bot echo bot.

Both bots run as their own process against the same zero-latency sandbox stand-ins (a separate
process, flood limits off). N updates are queued at the stand-in Telegram first; the clock runs
from the first answer the stand-in records to the last (steady state: start-up is not counted,
it is reported apart). khronos runs
with all its resilience on (breakers, limiters with their limits lifted, SQLite journal and outbox
with synchronous=FULL); the echo bot (PTB 22, sequential) only echoes and has none of it.

    .venv/bin/python benchmarks/pipeline.py [--updates 2000] [--rounds 2]

Goal: at least the echo bot's throughput, worker RSS under 80 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

LIFTED = """
[limiters.telegram]
rates = ["100000/s"]
group_rates = ["100000/s"]
global_rates = ["100000/s"]
global_min_time = 0
max_concurrent = 100
max_queued = 100000
[limiters.anthropic]
max_concurrent = 1000
min_time = 0
max_queued = 100000
[limiters.global]
max_concurrent = 1000
min_time = 0
"""

ECHO_BOT = """
import os, sys
from telegram import Update
from telegram.ext import Application, MessageHandler, filters

async def echo(update: Update, context) -> None:
    await update.message.reply_text(update.message.text)

application = (
    Application.builder().token(os.environ["TELEGRAM_BOT_TOKEN"])
    .base_url(os.environ["KHRONOS_TELEGRAM_BASE_URL"] + "/bot")
    .base_file_url(os.environ["KHRONOS_TELEGRAM_BASE_URL"] + "/file/bot")
    .build()
)
application.add_handler(MessageHandler(filters.TEXT, echo))
application.run_polling(poll_interval=0.0, timeout=1)
"""


def start_sandbox(state: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], httpx.Client]:
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "khronos_cli.sandbox", "--state-dir", str(state), "--users", "0",
         "--llm-latency", "0", "--no-flood-limits", "--quiet"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    info_path = state / "sandbox.json"
    deadline = time.monotonic() + 30
    while not info_path.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the sandbox did not start")
        time.sleep(0.02)
    info = json.loads(info_path.read_text())
    return sandbox, info["env"], httpx.Client(base_url=info["telegram_base_url"], timeout=30)


def push(admin: httpx.Client, count: int, offset: int) -> None:
    for i in range(count):
        chat = 10_000 + (offset + i) % 500
        admin.post("/_sandbox/messages", json={"chat_id": chat, "text": f"m{offset + i}"})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(
    argv: list[str], env: dict[str, str], admin: httpx.Client, total: int
) -> tuple[float, float, float]:
    """(updates/s from first to last answer, peak RSS MB, seconds from start to first answer)."""
    start = time.monotonic()
    bot = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first: float | None = None
    try:
        while (done := admin.get("/_sandbox/stats").json()["deliveries"]) < total:
            if bot.poll() is not None:
                raise SystemExit(f"{argv[-1]} exited early")
            if first is None and done:
                first = time.monotonic()
            time.sleep(0.005)
        end = time.monotonic()
        first = first or end
        memory = rss_mb(bot.pid)
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(timeout=40)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait()
    return (total - 1) / max(end - first, 1e-6), memory, first - start


def measure(kind: str, updates: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix=f"khronos-bench-{kind}-") as tmp:
        root = Path(tmp)
        sandbox, env, admin = start_sandbox(root)
        try:
            push(admin, updates, 0)
            if kind == "khronos":
                state = root / "worker"
                state.mkdir(mode=0o700)
                (state / "khronos.toml").write_text(LIFTED)
                argv = [sys.executable, "-m", "khronos_cli.runtime.worker", "--state-dir",
                        str(state)]  # fmt: skip
                env = {**env, "KHRONOS_HTTP_PORT": "0"}
            else:
                script = root / "echo.py"
                script.write_text(textwrap.dedent(ECHO_BOT))
                argv = [sys.executable, str(script)]
            result = run_one(argv, env, admin, updates)
        finally:
            admin.close()
            sandbox.send_signal(signal.SIGTERM)
            sandbox.wait(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"khronos": [], "ptb-echo": []}
    for _ in range(options.rounds):
        for kind in results:
            results[kind].append(measure(kind, options.updates))
    best = {k: max(v) for k, v in results.items()}
    ours, echo = best["khronos"], best["ptb-echo"]
    print(f"\n{options.updates} updates, best of {options.rounds} rounds, 2-core machine\n")
    print("| bot | updates/s | ratio to echo bot | peak RSS MB | start to first answer s |")
    print("|---|---:|---:|---:|---:|")
    for name, (rate, memory, startup) in best.items():
        print(f"| {name} | {rate:,.0f} | {rate / echo[0]:.2f}x | {memory:.1f} | {startup:.2f} |")
    print()
    print(f"goal: throughput >= echo bot: {'met' if ours[0] >= echo[0] else 'NOT met'}; "
          f"RSS < 80 MB: {'met' if ours[1] < 80 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
