"""Time from SIGTERM to exit: an idle worker, a worker whose last job ends t s later, and uvicorn.

Each is a real process stopped with a real SIGTERM once it serves: the worker once ``GET /ready``
on its public port answers 200, uvicorn once its port accepts. Each exits the way it does in
production: the worker runs the seven steps, flushes its logs and leaves with ``os._exit`` (no
interpreter teardown: nothing is left to finalize); uvicorn runs its shutdown and returns from
``uvicorn.run``, then the interpreter tears down normally. The worker runs alone (no
supervisor), against the sandbox stand-ins in a process of their own; "with a job" gives the
stand-in Anthropic a t s latency, sends one message, waits until its job is running, then
signals, and measures from the moment the reply reaches the stand-in Telegram to the worker's
exit. uvicorn serves an empty ASGI app and is stopped the same way.

    .venv/bin/python benchmarks/shutdown.py [--rounds 5] [--job 1.0]

Goals: idle stop under 0.5 s and no slower than uvicorn's; with a job, exit within 100 ms of the
job's end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Sandbox, free_port, listening, sandbox, wait_until

UVICORN_APP = """
import uvicorn

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="warning")
"""


def stop_and_time(process: subprocess.Popen[bytes]) -> float:
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return time.monotonic() - start


def uvicorn_once(script: Path) -> float:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port)])
    wait_until(lambda: listening(port))
    return stop_and_time(process)


class Bench:
    def __init__(self, root: Path, stand_ins: Sandbox) -> None:
        self.root = root
        self.env = {**os.environ, **stand_ins.env, "KHRONOS_HTTP_PORT": "0"}
        self.admin = httpx.Client(base_url=stand_ins.telegram, timeout=30)
        self.anthropic = stand_ins.info["anthropic_base_url"]
        self.round = 0

    def close(self) -> None:
        self.admin.close()

    def start_worker(self) -> tuple[subprocess.Popen[bytes], Path]:
        self.round += 1
        state = self.root / f"worker-{self.round}"
        state.mkdir(mode=0o700)
        process = subprocess.Popen(
            [sys.executable, "-m", "khronos_cli.runtime.worker", "--state-dir", str(state)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: (state / "khronos.sock").exists())
        wait_until(lambda: self.ready(state))  # the same signal as uvicorn's: it serves
        return process, state

    def ready(self, state: Path) -> bool:
        """``GET /ready`` on the worker's public port answers 200."""
        port = self.status(state).get("http_port")
        if not isinstance(port, int):
            return False
        try:
            return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self, state: Path) -> dict[str, object]:
        try:
            transport = httpx.HTTPTransport(uds=str(state / "khronos.sock"))
            with httpx.Client(transport=transport) as client:
                data: dict[str, object] = client.get("http://khronos/status").json()
                return data
        except httpx.HTTPError:
            return {}

    def idle(self) -> float:
        process, _ = self.start_worker()
        return stop_and_time(process)

    def with_job(self, seconds: float) -> float:
        httpx.post(f"{self.anthropic}/_sandbox/mode", json={"mode": "slow", "delay": seconds})
        process, state = self.start_worker()
        before = self.admin.get("/_sandbox/stats").json()["deliveries"]
        self.admin.post("/_sandbox/messages", json={"chat_id": 42, "text": "hold on"})
        wait_until(lambda: self.status(state).get("jobs_active") == 1)
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: self.admin.get("/_sandbox/stats").json()["deliveries"] > before, 60)
        answered = time.monotonic()
        process.wait(timeout=60)
        httpx.post(f"{self.anthropic}/_sandbox/mode", json={"mode": "ok"})
        return time.monotonic() - answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--job", type=float, default=1.0, help="seconds the last job still runs")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khronos-bench-stop-") as tmp:
        root = Path(tmp)
        script = root / "uvicorn_app.py"
        script.write_text(UVICORN_APP)
        with sandbox(root, "--llm-latency", "0") as stand_ins:
            bench = Bench(root, stand_ins)
            try:
                idle = [bench.idle() for _ in range(options.rounds)]
                job = [bench.with_job(options.job) for _ in range(options.rounds)]
                uvi = [uvicorn_once(script) for _ in range(options.rounds)]
            finally:
                bench.close()
    med = statistics.median
    print(f"\n{options.rounds} rounds each, medians (max); 2-core machine; both signalled once")
    print("they serve (worker: /ready 200; uvicorn: its port accepts)\n")
    print("| what | SIGTERM to exit, ms | ratio to uvicorn |")
    print("|---|---:|---:|")
    idle_ms = f"{med(idle) * 1000:.0f} ({max(idle) * 1000:.0f})"
    uvi_ms = f"{med(uvi) * 1000:.0f} ({max(uvi) * 1000:.0f})"
    ratio = med(idle) / med(uvi)
    print(f"| khronos worker, idle (seven steps, then os._exit) | {idle_ms} | {ratio:.2f}x |")
    print(f"| uvicorn, empty app (its shutdown, then interpreter exit) | {uvi_ms} | 1.00x |")
    print(
        f"| khronos worker, last job ends {options.job:g} s after SIGTERM: exit after the "
        f"job's end | {med(job) * 1000:.0f} ({max(job) * 1000:.0f}) | |"
    )
    print()
    print(
        f"goal: idle under 500 ms: {'met' if med(idle) < 0.5 else 'NOT met'}; "
        f"no slower than uvicorn: {'met' if med(idle) <= med(uvi) else 'NOT met'}; "
        f"exit within 100 ms of the job's end: {'met' if med(job) <= 0.1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
