"""Wall time of `khronos breakers --json` against a live worker, beside the import floor.

The floor is `python -c "import typer, rich, httpx"`: what any Typer + rich + httpx CLI pays
before doing anything. Both are run as fresh processes, interleaved, N times; the table shows
the medians and the ratio.

    .venv/bin/python benchmarks/cli.py [--runs 30]

Goal: at most 1.3x the floor.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khronos-bench-cli-") as tmp:
        state = Path(tmp) / "state"
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "khronos_cli",
                "run",
                "--sandbox",
                "--users",
                "0",
                "--port",
                "0",
                "--state-dir",
                str(state),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if json.loads((state / "supervisor.json").read_text())["state"] == "ready":
                        break
                except (OSError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not become ready")
                time.sleep(0.05)
            khronos = Path(sys.executable).with_name("khronos")
            command = [str(khronos), "breakers", "--json", "--state-dir", str(state)]
            floor = [sys.executable, "-c", "import typer, rich, httpx"]
            for _ in range(3):  # warm the page cache
                timed(command)
                timed(floor)
            ours, base = [], []
            for _ in range(options.runs):
                ours.append(timed(command))
                base.append(timed(floor))
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=60)
    mine, ref = statistics.median(ours), statistics.median(base)
    print(f"\n{options.runs} runs each, interleaved, medians; 2-core machine\n")
    print("| command | median ms | p90 ms | ratio to floor |")
    print("|---|---:|---:|---:|")
    for name, samples in (
        ("khronos breakers --json (live worker)", ours),
        ('python -c "import typer, rich, httpx"', base),
    ):
        p90 = statistics.quantiles(samples, n=10)[-1]
        print(
            f"| {name} | {statistics.median(samples) * 1000:.0f} | {p90 * 1000:.0f} | "
            f"{statistics.median(samples) / ref:.2f}x |"
        )
    print(f"\ngoal: at most 1.3x the floor: {'met' if mine <= 1.3 * ref else 'NOT met'}")


if __name__ == "__main__":
    main()
