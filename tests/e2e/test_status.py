"""`khronos status` as a health summary, and the live views following the worker across a stop,
a restart by hand and a crash, through the real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from tests.instance import FAST_CONFIG, Instance
from tests.support import wait_for


class Follow:
    """A `khronos` process whose stdout and stderr lines are collected as they come."""

    def __init__(self, instance: Instance, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "khronos_cli", *args, "--state-dir", str(instance.state_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.out)]

    def interrupt(self) -> int:
        """Ctrl-C; the exit code, once both streams are read to their end and closed."""
        self.process.send_signal(signal.SIGINT)
        return self.close()

    def close(self) -> int:
        """Wait for the end (killing what still runs after 30 s) and close both streams."""
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for reader in self.readers:
            reader.join(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code


def rows(text: str) -> dict[str, list[str]]:
    """`khronos status` piped: each row's values by its key (`why` may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition("  ")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_watches_follow_the_worker_across_a_stop_and_a_restart(make_instance: Any) -> None:
    """status --watch --json, limiter watch --json and breakers --watch keep going when the
    worker stops and another starts, and say so; status after the stop says how it ended."""
    instance: Instance = make_instance().start()
    watches = {
        "status": Follow(instance, "status", "--watch", "--json", "--interval", "0.2"),
        "limiter": Follow(instance, "limiter", "watch", "telegram", "--json", "--interval", "0.2"),
        "breakers": Follow(instance, "breakers", "--watch", "--interval", "0.2"),
    }
    try:
        follow_a_stop_and_a_restart(instance, watches)
    finally:
        for running in watches.values():
            if running.process.poll() is None:
                running.process.kill()
            running.close()


def follow_a_stop_and_a_restart(instance: Instance, watches: dict[str, Follow]) -> None:
    first = instance.status()["pid"]
    wait_for(lambda: all(w.out for w in watches.values()), timeout=30)
    assert all(list(line) == ["telegram"] for line in watches["limiter"].json())
    assert instance.khronos("stop").returncode == 0 and instance.wait() == 0
    stopped = instance.khronos("status")
    assert stopped.returncode == 3 and "no khronos instance is running" in stopped.stderr
    shown = rows(stopped.stdout)
    assert shown["state"] == ["stopped"] and shown["last stop"][0].startswith("clean in ")
    assert shown["last stop"][0].endswith("(exit 0)")
    summary = json.loads(instance.khronos("status", "--json").stdout)
    assert summary["state"] == "stopped" and summary["last_shutdown"]["result"] == "clean"
    wait_for(lambda: watches["status"].json()[-1]["state"] == "stopped", timeout=30)
    wait_for(lambda: any("lost the worker" in line for line in watches["limiter"].err), timeout=30)
    seen = {name: len(w.out) for name, w in watches.items()}
    instance.start()
    second = instance.status()["pid"]
    wait_for(lambda: watches["status"].json()[-1].get("worker_pid") == second, timeout=30)
    wait_for(lambda: all(len(w.out) > seen[n] for n, w in watches.items()), timeout=30)
    assert watches["status"].json()[-1]["state"] in ("ready", "starting")
    assert f"the worker (pid {first}) is gone" in "\n".join(watches["status"].err)
    assert f"a worker runs again (pid {second})" in "\n".join(watches["status"].err)
    for name in ("limiter", "breakers"):
        said = "\n".join(watches[name].err)
        assert "lost the worker: nothing answers on" in said and "answers again after" in said
    assert watches["breakers"].out[0].split()[:2] == ["name", "state"]
    assert all(w.interrupt() == 0 for w in watches.values())


def test_status_sums_up_health_and_says_why_it_is_not_ready(
    make_instance: Any, redis_url: str
) -> None:
    """status shows a restart's backoff and the exit behind it, then open breakers, outages, the
    outbox backlog, jobs, Redis and the lease; after the stop, the kept messages."""
    config = (
        f'redis_url = "{redis_url}"\n{FAST_CONFIG}'
        '[supervisor]\nrestart_delay = "4s"\n[shutdown]\noutbox_timeout = "1s"\n'
    )
    instance: Instance = make_instance(config=config).start()
    worker = instance.supervisor()["worker_pid"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: instance.supervisor().get("state") == "backoff", timeout=30)
    backoff = instance.khronos("status")
    shown = rows(backoff.stdout)
    assert shown["state"] == ["backoff"], backoff.stdout
    assert re.fullmatch(r"for the next start in \ds, after exit 137", shown["waiting"][0])
    assert shown["last exit"][0].startswith("code 137 after ") and "None" not in backoff.stdout
    assert shown["pid"][0].endswith("(no worker now)")
    waiting = json.loads(instance.khronos("status", "--json").stdout)["waiting_for"]
    assert waiting.startswith("the next start in ")
    instance.wait_ready()
    wait_for(lambda: instance.status().get("lease") == "held", timeout=30)
    started = instance.khronos("outage", "start", "telegram-api", "--for", "60s")
    assert started.returncode == 0, started.stderr
    for i in range(3):
        queued = instance.public("POST", "/messages", json={"chat_id": 7100 + i, "text": "hi"})
        assert queued.status_code == 202, queued.text
    wait_for(lambda: instance.status().get("messages_queued") == 3, timeout=30)
    wait_for(lambda: instance.status()["breakers"]["telegram-api"]["state"] == "open", timeout=30)
    summary = json.loads(instance.khronos("status", "--json").stdout)
    assert summary["state"] == "degraded" and summary["waiting_for"] is None
    assert summary["breakers"]["telegram-api"]["state"] == "open"
    assert list(summary["outages"]) == ["telegram-api"]
    assert (summary["messages_queued"], summary["jobs_active"]) == (3, 0)
    assert (summary["redis"], summary["lease"]) == ("ok", "held")
    shown = rows(instance.khronos("status").stdout)
    assert "breaker telegram-api open" in shown["why"]
    assert shown["breakers"][0].startswith("telegram-api open (")
    assert shown["outages"][0].startswith("telegram-api down, ")
    assert shown["outbox"] == ["3 messages queued"] and shown["jobs"] == ["0 running"]
    assert shown["redis"] == ["ok, lease held"]
    instance.khronos("stop")
    instance.wait()
    after = rows(instance.khronos("status").stdout)
    assert "kept 3 messages" in after["last stop"][0], after
