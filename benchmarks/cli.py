"""The operator's commands beside the process-control CLI they replace, measured in one run.

A live ``khronos run --sandbox`` and a real ``supervisord`` (the ``supervisor`` package of the
bench extras) supervising one program run side by side on this machine. Each command is a fresh
process, run ``--runs`` times interleaved with the others, its output to a pipe (as a script or
``watch`` would read it); the table shows the median CPU time (user + system of the child) and
wall time. The floors: ``curl --unix-socket … /status`` (one request on the control socket, no
Python) and ``python -c pass``. Both CLIs run from compiled bytecode, as installed packages do.

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/cli.py [--runs 20]

Goals (issue 14): every read's human output at or below ``supervisorctl status``; ``--json`` at
or below 0.6× of it. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import wait_until

SUPERVISORD_CONF = """
[unix_http_server]
file={root}/supervisor.sock
[supervisord]
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
nodaemon=true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{root}/supervisor.sock
[program:bot]
command=sleep 100000
"""


def measured(argv: list[str]) -> tuple[float, float]:
    """(CPU seconds of the child, wall seconds) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    # Both CLIs run from bytecode, as installed packages do: pip compiled supervisor's when it
    # installed it; an editable install of khronos leaves that to the first import, which
    # PYTHONDONTWRITEBYTECODE=1 forbids (khronos would compile its modules in every run).
    package = Path(__file__).resolve().parents[1] / "khronos_cli"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    with tempfile.TemporaryDirectory(prefix="khronos-bench-cli-") as tmp:
        root = Path(tmp)
        state = root / "state"
        conf = root / "supervisord.conf"
        conf.write_text(SUPERVISORD_CONF.format(root=root))
        khronos_run = [str(bin_dir / "khronos"), "run", "--sandbox", "--users", "0"]
        run = subprocess.Popen(
            [*khronos_run, "--port", "0", "--state-dir", str(state)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        supervisord = subprocess.Popen(
            [str(bin_dir / "supervisord"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: _ready(state), 60, "khronos")
            wait_until((root / "supervisor.sock").exists, 30, "supervisord")
            rows = compare(bin_dir, state, conf, options.runs)
        finally:
            run.send_signal(signal.SIGTERM)
            supervisord.send_signal(signal.SIGTERM)
            run.wait(timeout=60)
            supervisord.wait(timeout=30)
    print(report(rows, options.runs))


def _ready(state: Path) -> bool:
    try:
        return json.loads((state / "supervisor.json").read_text())["state"] == "ready"
    except (OSError, ValueError, KeyError):
        return False


def compare(bin_dir: Path, state: Path, conf: Path, runs: int) -> dict[str, list[float]]:
    khronos = [str(bin_dir / "khronos")]
    where = ["--state-dir", str(state)]
    commands = {
        "supervisorctl status": [str(bin_dir / "supervisorctl"), "-c", str(conf), "status"],
        "khronos status": [*khronos, "status", *where],
        "khronos breakers": [*khronos, "breakers", *where],
        "khronos limiter": [*khronos, "limiter", *where],
        "khronos outage list": [*khronos, "outage", "list", *where],
        "khronos config": [*khronos, "config", "--sandbox", *where],
        "khronos status --json": [*khronos, "status", "--json", *where],
        "khronos breakers --json": [*khronos, "breakers", "--json", *where],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    curl = shutil.which("curl")
    if curl:
        socket = str(state / "khronos.sock")
        request = [curl, "-s", "--unix-socket", socket, "http://khronos/status"]
        commands["curl --unix-socket … /status"] = request
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    wall: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(3):  # the page cache
        for argv in commands.values():
            measured(argv)
    for _ in range(runs):
        for name, argv in commands.items():
            spent, took = measured(argv)
            cpu[name].append(spent)
            wall[name].append(took)
    return {name: [statistics.median(cpu[name]), statistics.median(wall[name])] for name in cpu}


def report(rows: dict[str, list[float]], runs: int) -> str:
    anchor = rows["supervisorctl status"][0]
    lines = [
        f"{runs} runs each, interleaved, medians; output to a pipe; 2-core machine",
        "",
        "| command | CPU ms | wall ms | CPU × supervisorctl status | goal | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, (spent, took) in rows.items():
        goal, met = "", ""
        if name.startswith("khronos") and name.endswith("--json"):
            goal, met = "≤ 0.6×", "yes" if spent <= 0.6 * anchor else "no"
        elif name.startswith("khronos"):
            goal, met = "≤ 1×", "yes" if spent <= anchor else "no"
        ratio = spent / anchor
        lines.append(
            f"| {name} | {spent * 1000:.0f} | {took * 1000:.0f} | {ratio:.2f}× | {goal} | {met} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
