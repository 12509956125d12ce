"""The operator's CLI against a live `khronos run --sandbox`: JSON keys, outages, forced states,
the socket's modes, one instance per state dir, and bad clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.instance import Instance, khronos
from tests.support import wait_for


def as_json(instance: Instance, *args: str) -> Any:
    result = instance.khronos(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def breaker(instance: Instance, name: str) -> dict[str, Any]:
    snapshot: dict[str, Any] = as_json(instance, "breakers")[name]
    return snapshot


def test_every_json_output_carries_the_documented_keys(instance: Instance) -> None:
    """status, breakers, limiter and outage list --json parse and carry DESIGN.md's keys."""
    status = as_json(instance, "status")
    for key in (
        "pid",
        "worker_pid",
        "state",
        "restarts",
        "http_port",
        "socket",
        "backend",
        "last_shutdown",
    ):
        assert key in status, key
    assert status["state"] == "ready" and status["backend"] == "memory"
    assert status["pid"] != status["worker_pid"]  # supervisor and worker
    breakers = as_json(instance, "breakers")
    assert set(breakers) == {
        "anthropic-api",
        "telegram-api",
        "telegram-updates",
        "openai-api",
        "openai-transcription",
        "database",
    }
    assert all(b["state"] == "closed" and "stats" in b for b in breakers.values())
    limiters = as_json(instance, "limiter")
    assert set(limiters) == {"telegram", "global", "anthropic", "whisper"}
    for snapshot in limiters.values():
        assert {"executing", "queued", "done", "dropped"} <= set(snapshot)
    assert as_json(instance, "outage", "list") == {}
    public = instance.public("GET", "/breakers/status").json()
    assert set(public) == set(breakers)
    full = instance.khronos("breakers", "--json", "--interval", "1")  # not the fast path
    assert full.returncode == 0 and json.loads(full.stdout).keys() == breakers.keys()
    assert instance.khronos("breakers", "--json", "--check").returncode == 0


def test_an_outage_opens_the_breaker_and_it_recovers(instance: Instance) -> None:
    """`outage start anthropic-api --mode down` trips the real breaker; after it ends, it closes."""
    started = instance.khronos("outage", "start", "anthropic-api", "--mode", "down", "--for", "3s")
    assert started.returncode == 0, started.stderr
    outages = as_json(instance, "outage", "list")
    assert list(outages) == ["anthropic-api"] and outages["anthropic-api"]["remaining_s"] > 0
    for i in range(4):
        instance.push(6000 + i, f"during outage {i}")
    wait_for(lambda: breaker(instance, "anthropic-api")["state"] == "open", timeout=30)
    wait_for(lambda: instance.ledger()["answered"] == 4, timeout=30)
    assert all(d["text"].startswith("openai echo: ") for d in instance.deliveries())
    wait_for(lambda: as_json(instance, "outage", "list") == {}, timeout=30)
    wait_for(lambda: breaker(instance, "anthropic-api")["state"] != "open", timeout=30)
    instance.push(6100, "after the outage")
    wait_for(lambda: breaker(instance, "anthropic-api")["state"] == "closed", timeout=30)
    wait_for(lambda: instance.ledger()["answered"] == 5, timeout=30)


def test_forced_states_show_and_expire(instance: Instance) -> None:
    """A forced-open breaker shows as forced with its reason, fails --check, and heals itself."""
    forced = instance.khronos("breakers", "open", "openai-api", "--for", "2s", "--reason", "drill")
    assert forced.returncode == 0, forced.stderr
    snapshot = breaker(instance, "openai-api")
    assert snapshot["state"] == "open"
    assert snapshot["forced"]["state"] == "open" and snapshot["forced"]["reason"] == "drill"
    assert instance.khronos("breakers", "--check").returncode == 1
    table = instance.khronos("breakers")
    assert "drill" in table.stdout and "openai-api" in table.stdout
    wait_for(lambda: breaker(instance, "openai-api")["forced"] is None, timeout=30)
    closed = instance.khronos("breakers", "close", "telegram-api", "--for", "1m")
    assert (
        closed.returncode == 0 and breaker(instance, "telegram-api")["forced"]["state"] == "closed"
    )
    assert instance.khronos("breakers", "reset", "telegram-api").returncode == 0
    assert breaker(instance, "telegram-api")["forced"] is None


def test_socket_is_private(instance: Instance) -> None:
    """The control socket is 0600 and its directory 0700."""
    path = instance.state_dir / "khronos.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(instance.state_dir.stat().st_mode) == 0o700


def test_a_second_run_on_the_same_state_dir_is_refused(instance: Instance, tmp_path: Path) -> None:
    """A second `khronos run` on a live state dir exits non-zero and names the problem."""
    second = khronos(
        "run",
        "--sandbox",
        "--users",
        "0",
        "--port",
        "0",
        "--state-dir",
        str(instance.state_dir),
        timeout=60,
    )
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert instance.status()["state"] == "ready"


def test_a_stale_socket_is_no_obstacle(make_instance: Any) -> None:
    """A socket file left by a crash does not stop the next `khronos run`."""
    instance = make_instance()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(instance.state_dir / "khronos.sock"))
    stale.close()
    instance.start()
    assert instance.status()["state"] == "ready"


def test_garbage_on_the_socket_leaves_the_worker_serving(instance: Instance) -> None:
    """Random bytes, a half request and a vanished client do not hurt the worker."""
    path = str(instance.state_dir / "khronos.sock")
    for payload in (
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET /status HTTP/1.1\r\nHost:",
        os.urandom(4096),
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            client.sendall(payload)
    bad = instance.khronos("breakers", "open", "no-such-breaker")
    assert bad.returncode == 2 and "no-such-breaker" in bad.stderr  # a usage error
    assert as_json(instance, "status")["state"] == "ready"


def test_no_instance_exits_3_with_a_hint(tmp_path: Path) -> None:
    """Every command on an empty state dir exits 3 with a one-line hint, no traceback."""
    for args in (["status"], ["breakers"], ["limiter"], ["outage", "list"], ["stop"]):
        result = khronos(*args, "--state-dir", str(tmp_path), timeout=60)
        assert result.returncode == 3, (args, result.stderr)
        assert "khronos run" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_limiter_watch_streams_ndjson_until_interrupted(instance: Instance) -> None:
    """`limiter watch --json` prints one JSON line per interval and exits 0 on Ctrl-C."""
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "khronos_cli",
            "limiter",
            "watch",
            "--json",
            "--interval",
            "0.2",
            "--state-dir",
            str(instance.state_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    lines = [json.loads(watch.stdout.readline()) for _ in range(2)]
    assert all("telegram" in line for line in lines)
    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=30) == 0
    watch.stdout.close()
