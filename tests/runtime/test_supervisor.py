"""The supervisor as a real process: signals, restarts with backoff, crash loops, no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from khronos_cli.runtime.supervisor import read_state
from tests.support import wait_for

RUNNER = """
import json, sys
from pathlib import Path
from khronos_cli.runtime.supervisor import Supervisor
from khronos_cli.settings import SupervisorSettings
options = json.loads(sys.argv[1])
settings = SupervisorSettings(**options.pop("settings", {}))
sys.exit(Supervisor(options.pop("argv"), Path(options.pop("state_dir")), settings=settings,
                    **options).run())
"""

WORKER = """
import os, signal, socket, sys, time
from pathlib import Path
mode = sys.argv[1]
counter = Path(sys.argv[2])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.with_suffix(".tmp").write_text(str(runs))
os.replace(counter.with_suffix(".tmp"), counter)
print(f"worker run {runs} pid {os.getpid()}", flush=True)

def notify(message):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), os.environ["NOTIFY_SOCKET"])

if mode == "crash" or (mode.startswith("crash-then-run") and runs <= int(mode.split(":")[1])):
    print("boom: worker crashed", flush=True)
    sys.exit(3)
if mode == "config":
    print("bad config", flush=True)
    sys.exit(78)
stop = []
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    signal.signal(signal.SIGHUP, lambda *a: stop.append(1))
notify("READY=1")
if mode == "self-stop":
    notify("STOPPING=1")
    sys.exit(0)
while not stop:  # a stubborn worker ignores SIGTERM: it waits here until it is killed
    signal.pause()
print("worker stopping cleanly", flush=True)
if mode == "slow-stop":
    time.sleep(1.0)  # the work of a stop that takes a while (not a wait for anything)
sys.exit(0)
"""


class Run:
    """A supervisor subprocess and its state dir."""

    def __init__(self, tmp_path: Path, mode: str, **options: Any) -> None:
        self.state_dir = tmp_path / "state"
        self.counter = tmp_path / "runs"
        worker = tmp_path / "worker.py"
        worker.write_text(textwrap.dedent(WORKER))
        options = {
            "argv": [sys.executable, str(worker), mode, str(self.counter)],
            "state_dir": str(self.state_dir),
            "settings": {
                "restart_delay": 0.02,
                "max_restart_delay": 0.1,
                **options.pop("settings", {}),
            },
            "jitter": 0.0,
            **options,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", RUNNER, json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def state(self) -> dict[str, Any]:
        return read_state(self.state_dir) or {}

    def runs(self) -> int:
        return int(self.counter.read_text()) if self.counter.exists() else 0

    def wait(self, timeout: float = 20) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.read()


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
        if run.process.stdout:
            run.process.stdout.close()
        worker = run.state().get("worker_pid")
        if worker and alive(worker):
            os.kill(worker, signal.SIGKILL)


def start(runs: list[Run], tmp_path: Path, mode: str, **options: Any) -> Run:
    run = Run(tmp_path, mode, **options)
    runs.append(run)
    return run


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is reaped when its parent waits.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_sigterm_is_forwarded_and_the_workers_code_returned(
    runs: list[Run], tmp_path: Path
) -> None:
    """SIGTERM reaches the worker; the supervisor exits with its code and leaves no process."""
    run = start(runs, tmp_path, "serve")
    wait_for(lambda: run.state().get("state") == "ready")
    worker = run.state()["worker_pid"]
    assert os.getpgid(worker) == worker != os.getpgid(run.process.pid)  # its own process group
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert "worker stopping cleanly" in run.output()
    assert not alive(worker)
    assert run.state()["state"] == "stopped" and run.state()["exit_code"] == 0


def test_crashes_are_restarted_with_backoff(runs: list[Run], tmp_path: Path) -> None:
    """A worker that crashes twice is restarted twice, then stays up, with the count shown."""
    run = start(runs, tmp_path, "crash-then-run:2")
    wait_for(lambda: run.state().get("state") == "ready")
    state = run.state()
    assert run.runs() == 3 and state["restarts"] == 2
    assert state["last_exit"]["code"] == 3 and state["failures"] == 2
    run.process.send_signal(signal.SIGINT)
    assert run.wait() == 0


def test_crash_loop_is_shown_and_retries_go_on(runs: list[Run], tmp_path: Path) -> None:
    """After N fast failures the state is crashloop with the last exit and lines; retries go on."""
    run = start(runs, tmp_path, "crash", settings={"crashloop_after": 3})
    wait_for(lambda: run.state().get("state") == "crashloop")
    state = run.state()
    assert state["last_exit"]["code"] == 3
    assert any("boom: worker crashed" in line for line in state["last_lines"])
    seen = run.runs()
    wait_for(lambda: run.runs() > seen + 1)  # still retrying at the cap
    run.process.send_signal(signal.SIGTERM)
    # 0 when the signal lands in a backoff pause; else the worker's own end after the request:
    # 1 when the forwarded signal killed it, 3 when it crashed first anyway.
    assert run.wait() in (0, 1, 3)
    assert run.state()["state"] == "stopped" and run.state()["worker_pid"] is None


def test_config_exit_is_not_restarted(runs: list[Run], tmp_path: Path) -> None:
    """A worker exiting 78 is not restarted and the supervisor exits 78 too."""
    run = start(runs, tmp_path, "config")
    assert run.wait() == 78
    assert run.runs() == 1 and run.state()["restarts"] == 0
    assert "not restarting" in run.output()


def test_worker_announced_stop_ends_the_supervisor(runs: list[Run], tmp_path: Path) -> None:
    """A worker that says STOPPING=1 (khronos stop) and exits is not restarted."""
    run = start(runs, tmp_path, "self-stop")
    assert run.wait() == 0
    assert run.runs() == 1


def test_second_supervisor_on_the_same_state_dir_is_refused(
    runs: list[Run], tmp_path: Path
) -> None:
    """A second supervisor on a state dir that has a live one fails without touching it."""
    first = start(runs, tmp_path, "serve")
    wait_for(lambda: first.state().get("state") == "ready")
    second = start(runs, tmp_path, "serve")
    assert second.wait() != 0
    assert "already running" in second.output()
    assert first.process.poll() is None and first.runs() == 1
    first.process.send_signal(signal.SIGTERM)
    assert first.wait() == 0


def test_killed_supervisor_leaves_no_orphan(runs: list[Run], tmp_path: Path) -> None:
    """SIGKILL of the supervisor takes the worker down with it (no orphan)."""
    run = start(runs, tmp_path, "serve")
    wait_for(lambda: run.state().get("state") == "ready")
    worker = run.state()["worker_pid"]
    run.process.kill()
    run.wait()
    wait_for(lambda: not alive(worker))


def test_worker_ignoring_sigterm_is_killed_after_the_deadline(
    runs: list[Run], tmp_path: Path
) -> None:
    """A worker still running kill_after seconds after the stop request is SIGKILLed, exit 1."""
    run = start(runs, tmp_path, "stubborn", settings={"kill_after": 0.5})
    wait_for(lambda: run.state().get("state") == "ready")
    worker = run.state()["worker_pid"]
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 1
    assert "killing it" in run.output()
    assert not alive(worker)


def test_restart_signal_replaces_the_worker_without_a_backoff(
    runs: list[Run], tmp_path: Path
) -> None:
    """SIGUSR1 (`khronos restart`): the worker gets SIGTERM, a new one starts at once (a 60 s
    backoff is not waited), the supervisor stays; the restart is counted, not a failure."""
    run = start(
        runs, tmp_path, "serve", settings={"restart_delay": 60.0, "max_restart_delay": 60.0}
    )
    wait_for(lambda: run.state().get("state") == "ready")
    first = run.state()["worker_pid"]
    run.process.send_signal(signal.SIGUSR1)
    wait_for(lambda: run.runs() == 2 and run.state().get("state") == "ready", timeout=20)
    state = run.state()
    assert state["worker_pid"] != first and not alive(first)
    assert state["restarts"] == 1 and state["failures"] == 0 and state["last_exit"]["code"] == 0
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert "stopped for a restart" in run.output()


def test_restart_signal_in_a_backoff_starts_the_worker_now(runs: list[Run], tmp_path: Path) -> None:
    """SIGUSR1 during a 60 s backoff starts the next worker at once."""
    run = start(
        runs,
        tmp_path,
        "crash-then-run:1",
        settings={"restart_delay": 60.0, "max_restart_delay": 60.0},
    )
    wait_for(lambda: run.state().get("state") == "backoff")
    run.process.send_signal(signal.SIGUSR1)
    wait_for(lambda: run.state().get("state") == "ready", timeout=20)
    assert run.runs() == 2
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0


def test_sighup_is_forwarded_as_a_graceful_stop(runs: list[Run], tmp_path: Path) -> None:
    """SIGHUP to the supervisor: logged, passed to the worker, exit with the worker's code."""
    run = start(runs, tmp_path, "serve")
    wait_for(lambda: run.state().get("state") == "ready")
    run.process.send_signal(signal.SIGHUP)
    assert run.wait() == 0
    output = run.output()
    assert "SIGHUP: stopping gracefully" in output and "worker stopping cleanly" in output
    assert run.runs() == 1


def test_a_stop_during_a_restart_wins(runs: list[Run], tmp_path: Path) -> None:
    """SIGTERM while a restart's stop runs (state `restarting`): no new worker, exit 0."""
    run = start(runs, tmp_path, "slow-stop")
    wait_for(lambda: run.state().get("state") == "ready")
    run.process.send_signal(signal.SIGUSR1)
    wait_for(lambda: run.state().get("state") == "restarting")
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert run.runs() == 1 and run.state()["state"] == "stopped"
