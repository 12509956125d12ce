"""Updates answered end to end: throughput, CPU per update, latency and memory, beside the echo
bots operators run today — aiogram 3 (updates handled concurrently, its default) and
python-telegram-bot 22 with ``concurrent_updates`` and without — all in one run, each against
its own copy of the same Telegram stand-in (a separate process, flood limits off).

Each bot runs twice over, as its own process:

1. **throughput**: N updates wait at the stand-in before the bot starts; the clock runs from the
   first answer the stand-in records to the N-th (start-up is reported apart), and the bot's CPU
   time (``/proc/<pid>/stat``) over the same span gives CPU seconds per 1,000 updates;
2. **latency**: then M messages arrive at a steady 25 a second (below every bot's capacity); the
   time from each message to its answer (the stand-in's clock on both ends) gives p50/p99.

Peak RSS is ``VmHWM`` at the end. The stand-ins' own CPU over the throughput span is printed too,
and how many of the machine's cores bot and stand-ins kept busy (a bot is bound by its one core
long before the machine is full). khronos runs with all of its resilience on — breakers, the
limiters (their limits lifted: this loads the pipeline, not Telegram's 30 messages a second), an
LLM call per update (the Anthropic stand-in, no latency), the SQLite journal and outbox with
``synchronous=FULL`` — while the echo bots only echo. The anchors run as their docs show: aiogram's
``Dispatcher.start_polling`` with a message handler; PTB's ``Application.run_polling``. One more
aiogram row, ``aiogram-llm``, does an LLM call per update too (aiohttp POSTs the same Anthropic
stand-in, then the handler answers with its text): the same upstream work as khronos, without
the journal, breakers or limiters, so the two rows apart show what khronos's resilience costs.
Another, ``aiogram-gc``, is the echo bot with the garbage-collector settings khronos's worker
uses (young collections every 20,000 allocations, the start-up heap frozen): not the anchor, but
what those settings alone are worth to it.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/pipeline.py [--updates 2000] [--latency-messages 300] [--rounds 1]
        [--bots khronos,aiogram,aiogram-gc,aiogram-llm,ptb-concurrent,ptb]

Goal (issue 14): khronos's throughput >= the aiogram echo bot's, its CPU per update <= 1.5x
aiogram's, its RSS < 80 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import sandbox

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

AIOGRAM = """
import asyncio, logging, os
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

logging.basicConfig(level=logging.WARNING)
dispatcher = Dispatcher()

@dispatcher.message()
async def echo(message: Message) -> None:
    await message.answer(message.text)

async def main() -> None:
    server = TelegramAPIServer.from_base(os.environ["KHRONOS_TELEGRAM_BASE_URL"])
    bot = Bot(os.environ["TELEGRAM_BOT_TOKEN"], session=AiohttpSession(api=server))
    await dispatcher.start_polling(bot, polling_timeout=1, handle_signals=True)

asyncio.run(main())
"""

AIOGRAM_LLM = """
import asyncio, logging, os
import aiohttp
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message

logging.basicConfig(level=logging.WARNING)
dispatcher = Dispatcher()
LLM = os.environ["KHRONOS_ANTHROPIC_BASE_URL"] + "/v1/messages"
HEADERS = {"x-api-key": os.environ.get("ANTHROPIC_API_KEY", "sk-ant-sandbox"),
           "anthropic-version": "2023-06-01"}
session: aiohttp.ClientSession

@dispatcher.message()
async def ask(message: Message) -> None:
    payload = {"model": "claude-sonnet-4-5", "max_tokens": 1024,
               "messages": [{"role": "user", "content": message.text}]}
    async with session.post(LLM, json=payload, headers=HEADERS) as response:
        body = await response.json()
    await message.answer(body["content"][0]["text"])

async def main() -> None:
    global session
    session = aiohttp.ClientSession()
    server = TelegramAPIServer.from_base(os.environ["KHRONOS_TELEGRAM_BASE_URL"])
    bot = Bot(os.environ["TELEGRAM_BOT_TOKEN"], session=AiohttpSession(api=server))
    await dispatcher.start_polling(bot, polling_timeout=1, handle_signals=True)

asyncio.run(main())
"""

PTB = """
import os
from telegram import Update
from telegram.ext import Application, MessageHandler, filters

async def echo(update: Update, context) -> None:
    await update.message.reply_text(update.message.text)

application = (
    Application.builder().token(os.environ["TELEGRAM_BOT_TOKEN"])
    .base_url(os.environ["KHRONOS_TELEGRAM_BASE_URL"] + "/bot")
    .base_file_url(os.environ["KHRONOS_TELEGRAM_BASE_URL"] + "/file/bot")
    .concurrent_updates(CONCURRENT)
    .build()
)
application.add_handler(MessageHandler(filters.TEXT, echo))
application.run_polling(poll_interval=0.0, timeout=1)
"""

# aiogram-gc: the echo bot with the collector settings khronos's worker uses (runtime/heap.py),
# set before aiogram loads and frozen once it has built its dispatcher. Not the anchor (aiogram's
# docs say nothing of the collector): it shows what those settings alone are worth.
GC_PRELUDE = """
import gc
gc.set_threshold(20_000, 20, 20)
"""
GC_FREEZE = "    gc.collect(); gc.freeze()\n"

BOTS = ("khronos", "aiogram", "aiogram-gc", "aiogram-llm", "ptb-concurrent", "ptb")
ANCHOR = "aiogram"
LATENCY_RATE = 25.0  # messages per second in the latency phase


@dataclass
class Result:
    rate: float  # updates per second, first to last answer
    cpu_per_1000: float  # CPU seconds of the bot per 1,000 updates, same span
    stand_in_per_1000: float  # CPU seconds of the stand-ins (Telegram, LLM) per 1,000 updates
    p50_ms: float
    p99_ms: float
    rss_mb: float
    startup_s: float


def push(admin: httpx.Client, index: int) -> None:
    chat = 10_000 + index % 500
    admin.post("/_sandbox/messages", json={"chat_id": chat, "text": f"m{index}"})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def delivered(admin: httpx.Client) -> int:
    return int(admin.get("/_sandbox/stats").json()["deliveries"])


def latencies(admin: httpx.Client, first_index: int) -> list[float]:
    """Seconds from each latency-phase message to the answer that carries its text."""
    sent = {
        m["text"]: m["at"]
        for m in admin.get("/_sandbox/messages").json()["items"]
        if int(m["text"][1:]) >= first_index
    }
    seen: list[float] = []
    for delivery in admin.get("/_sandbox/deliveries").json()["items"]:
        text = delivery["text"].rsplit(" ", 1)[-1]  # "m12" or "anthropic echo: m12"
        if text in sent:
            seen.append(delivery["at"] - sent.pop(text))
    return seen


def wait_for_bot(condition: object, bot: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():  # type: ignore[operator]
        if bot.poll() is not None:
            raise SystemExit(f"the bot exited early ({what})")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def run_bot(
    argv: list[str], env: dict[str, str], admin: httpx.Client, stand_in: int, n: int, m: int
) -> Result:
    for i in range(n):
        push(admin, i)
    start = time.monotonic()
    bot = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_bot(lambda: delivered(admin) > 0, bot, "the first answer")
        first, cpu_first = time.monotonic(), cpu_seconds(bot.pid)
        served_first = cpu_seconds(stand_in)
        wait_for_bot(lambda: delivered(admin) >= n, bot, f"{n} answers")
        last, cpu_last = time.monotonic(), cpu_seconds(bot.pid)
        served_last = cpu_seconds(stand_in)
        for i in range(m):  # the latency phase, at a steady rate
            due = last + i / LATENCY_RATE
            time.sleep(max(0.0, due - time.monotonic()))
            push(admin, n + i)
        wait_for_bot(lambda: delivered(admin) >= n + m, bot, f"{m} more answers")
        seen = sorted(latencies(admin, n))
        memory = rss_mb(bot.pid)
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(timeout=40)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait()
    span = max(last - first, 1e-6)
    return Result(
        rate=(n - 1) / span,
        cpu_per_1000=(cpu_last - cpu_first) / (n - 1) * 1000,
        stand_in_per_1000=(served_last - served_first) / (n - 1) * 1000,
        p50_ms=statistics.median(seen) * 1000,
        p99_ms=seen[min(len(seen) - 1, int(0.99 * len(seen)))] * 1000,
        rss_mb=memory,
        startup_s=first - start,
    )


def measure(kind: str, n: int, m: int) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"khronos-bench-{kind}-") as tmp:
        root = Path(tmp)
        with sandbox(root, "--llm-latency", "0", "--no-flood-limits") as stand_ins:
            env = stand_ins.env
            admin = httpx.Client(base_url=stand_ins.telegram, timeout=30)
            try:
                if kind == "khronos":
                    state = root / "worker"
                    state.mkdir(mode=0o700)
                    (state / "khronos.toml").write_text(LIFTED)
                    worker = [sys.executable, "-m", "khronos_cli.runtime.worker"]
                    argv = [*worker, "--state-dir", str(state)]
                    env = {**env, "KHRONOS_HTTP_PORT": "0"}
                else:
                    script = root / "bot.py"
                    source = {"aiogram": AIOGRAM, "aiogram-llm": AIOGRAM_LLM}.get(kind, PTB)
                    if kind == "aiogram-gc":
                        polling = "    await dispatcher.start_polling"
                        source = GC_PRELUDE + AIOGRAM.replace(polling, GC_FREEZE + polling)
                    source = source.replace("CONCURRENT", str(kind == "ptb-concurrent"))
                    script.write_text(textwrap.dedent(source))
                    argv = [sys.executable, str(script)]
                return run_bot(argv, env, admin, stand_ins.process.pid, n, m)
            finally:
                admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="best throughput of this many")
    parser.add_argument("--bots", default=",".join(BOTS), help="which bots (comma-separated)")
    options = parser.parse_args()
    kinds = [kind for kind in options.bots.split(",") if kind]
    unknown = sorted({*kinds, ANCHOR} - set(BOTS)) or sorted({ANCHOR} - set(kinds))
    if unknown:
        parser.error(f"--bots must name known bots and include {ANCHOR}: {', '.join(unknown)}")
    results: dict[str, list[Result]] = {kind: [] for kind in kinds}
    for _ in range(options.rounds):
        for kind in kinds:  # interleaved, so a noisy minute hurts every bot alike
            results[kind].append(measure(kind, options.updates, options.latency_messages))
    best = {kind: max(runs, key=lambda r: r.rate) for kind, runs in results.items()}
    anchor = best[ANCHOR]
    print(
        f"\n{options.updates} queued updates, then {options.latency_messages} at "
        f"{LATENCY_RATE:g}/s; best of {options.rounds}; {os.cpu_count()}-core machine\n"
    )
    print(
        "| bot | updates/s | × aiogram | CPU s / 1,000 updates | × aiogram | p50 ms | p99 ms "
        "| peak RSS MB | start to first answer s | stand-ins' CPU s / 1,000 updates "
        "| cores busy (bot + stand-ins) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, r in best.items():
        busy = (r.cpu_per_1000 + r.stand_in_per_1000) * r.rate / 1000
        print(
            f"| {kind} | {r.rate:,.0f} | {r.rate / anchor.rate:.2f} | {r.cpu_per_1000:.2f} "
            f"| {r.cpu_per_1000 / anchor.cpu_per_1000:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.rss_mb:.1f} | {r.startup_s:.2f} | {r.stand_in_per_1000:.2f} | {busy:.2f} |"
        )
    ours = best.get("khronos")
    if ours is None:
        return
    goals = {
        "throughput >= aiogram": ours.rate >= anchor.rate,
        "CPU per update <= 1.5x aiogram": ours.cpu_per_1000 <= 1.5 * anchor.cpu_per_1000,
        "RSS < 80 MB": ours.rss_mb < 80,
    }
    print("\n" + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    same = best.get("aiogram-llm")
    if same is None:
        return
    print(
        f"beside aiogram doing the same upstream work (aiogram-llm): throughput "
        f"{ours.rate / same.rate:.2f}x, CPU per update {ours.cpu_per_1000 / same.cpu_per_1000:.2f}x"
    )


if __name__ == "__main__":
    main()
