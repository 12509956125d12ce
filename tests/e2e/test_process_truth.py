"""The process tells the truth (issue 12): a taken port refused before the fork, every state left
from the CLI (stop in a backoff or a crash loop, restart, a failed --detach), a stop whose result
says what happened (kept work is clean), SIGHUP, and status after a stop; through the real
`khronos` command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.instance import FAST_CONFIG, Instance, alive, crashing, report
from tests.support import free_port, wait_for

RUN = [sys.executable, "-m", "khronos_cli", "run"]


def khronos_run(state: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUN, *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )


def gone(instance: Instance, pid: int) -> None:
    """``pid`` exits, and so does everything `khronos run` started."""
    wait_for(lambda: not alive(pid), timeout=60)
    if instance.process is not None:
        instance.wait(timeout=60)


def test_a_taken_port_is_refused_before_the_fork(make_instance: Any, tmp_path: Path) -> None:
    """`run --port P` with P taken: exit 78, one line naming the address, nothing forked; the
    same port on a live state dir still says "already running"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = tmp_path / "s"
        for extra in ((), ("--detach",)):
            refused = khronos_run(state, "--sandbox", "--users", "0", "--port", str(port), *extra)
            assert refused.returncode == 78, refused.stderr
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], refused.stderr
            assert not (state / "supervisor.json").exists()  # no supervisor was started
    port = free_port()
    running = make_instance(port=port).start()
    again = khronos_run(running.state_dir, "--sandbox", "--port", str(port))
    assert again.returncode != 78 and "already running" in again.stderr, again.stderr
    assert running.status()["state"] == "ready"


def test_a_port_taken_under_the_worker_is_a_configuration_failure(tmp_path: Path) -> None:
    """A worker that meets a taken port anyway (another process bound it after the check)
    exits 78, naming the address: its supervisor does not restart it."""
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": "123456:" + "A" * 35,
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "KHRONOS_HTTP_PORT": str(port),
            "KHRONOS_TELEGRAM_BASE_URL": f"http://127.0.0.1:{free_port()}",
        }
        worker = subprocess.run(
            [sys.executable, "-m", "khronos_cli.runtime.worker", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    assert worker.returncode == 78, worker.stderr
    assert f"127.0.0.1:{port} is in use" in worker.stderr


@pytest.mark.parametrize("state", ["backoff", "crashloop"])
def test_stop_ends_a_supervisor_with_no_worker(make_instance: Any, state: str) -> None:
    """`khronos stop` on a supervisor in backoff or crashloop: exit 0, nothing left running."""
    after = 1 if state == "crashloop" else 10
    config = FAST_CONFIG + f'[supervisor]\nrestart_delay = "60s"\ncrashloop_after = {after}\n'
    instance = crashing(make_instance(config=config)).start(ready=False)
    wait_for(lambda: instance.supervisor().get("state") == state, timeout=60)
    supervisor = instance.supervisor()["pid"]
    stopped = instance.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f", {state})" in stopped.stderr and "nothing runs now" in stopped.stderr
    gone(instance, supervisor)
    assert instance.khronos("stop").returncode == 3


def test_a_failed_detach_leaves_nothing_running(tmp_path: Path) -> None:
    """`run --detach` whose worker crashes before it is ready: non-zero with the reason at the
    first crash, and no supervisor left behind."""
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    (state / "khronos.db").mkdir()  # the worker cannot open its database: it exits 1
    run = khronos_run(state, "--detach", "--sandbox", "--users", "0", "--port", "0", timeout=50)
    assert run.returncode == 1, run.stderr
    assert "exited with code 1" in run.stderr and "before it was ready" in run.stderr
    assert "nothing was left running" in run.stderr
    supervisor = json.loads((state / "supervisor.json").read_text())
    wait_for(lambda: not alive(supervisor["pid"]), timeout=10)


def test_restart_stops_the_worker_and_starts_another_under_the_same_supervisor(
    make_instance: Any,
) -> None:
    """`khronos restart --json`: a graceful stop (clean), a new worker ready, the same
    supervisor; `khronos stop` ends it all."""
    instance = make_instance().start()
    before = instance.supervisor()
    restarted = instance.khronos("restart", "--json", "--timeout", "60")
    assert restarted.returncode == 0, restarted.stderr
    result = json.loads(restarted.stdout)
    assert result["result"] == "restarted" and result["pid"] == before["pid"]
    assert result["old_worker_pid"] == before["worker_pid"]
    assert result["worker_pid"] not in (None, before["worker_pid"])
    assert result["stop"]["result"] == "clean"
    assert not alive(before["worker_pid"])
    assert instance.status()["state"] == "ready" and instance.process is not None
    assert instance.process.poll() is None
    assert instance.khronos("stop").returncode == 0
    assert instance.wait() == 0


def test_restart_without_a_supervisor_says_who_restarts(make_instance: Any) -> None:
    """`khronos restart` on a `--no-supervise` worker exits 1 naming its service manager (the
    worker keeps running); with nothing running it exits 3."""
    instance = make_instance(args=("--no-supervise",)).start()
    refused = instance.khronos("restart")
    assert refused.returncode == 1 and "--no-supervise" in refused.stderr, refused.stderr
    assert instance.status()["state"] == "ready"
    assert instance.khronos("stop").returncode == 0
    assert instance.wait() == 0
    assert instance.khronos("restart").returncode == 3


def test_a_rate_limited_backlog_is_kept_by_a_clean_stop_and_resent_once(
    make_instance: Any,
) -> None:
    """30 messages held by the telegram limiter: the stop is `clean` with "kept 30 messages"
    (exit 0), the outbox step says what it waited for, status tells how the run ended; the next
    start is ready at once, shows the backlog, and sends each message exactly once."""
    slow = FAST_CONFIG + (
        '[limiters.telegram]\nrates = ["1/h"]\n[shutdown]\noutbox_timeout = "1s"\n'
    )  # one message per chat per hour: each chat's first goes out, the other ten wait
    instance = make_instance(config=slow, external_sandbox=True).start()
    chats = (8101, 8102, 8103)
    texts = [f"m-{chat}-{i}" for chat in chats for i in range(11)]
    for text in texts:
        chat = int(text.split("-")[1])
        queued = instance.public("POST", "/messages", json={"chat_id": chat, "text": text})
        assert queued.status_code == 202, queued.text
    wait_for(lambda: len(instance.deliveries()) == 3, timeout=30)
    wait_for(lambda: instance.status().get("messages_queued") == 30, timeout=30)
    stopped = instance.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "clean stop" in stopped.stderr and "kept 30 messages" in stopped.stderr
    outbox = next(line for line in stopped.stderr.splitlines() if line.startswith("step 4"))
    assert "kept" in outbox and "waited for 30 messages queued" in outbox, outbox
    assert instance.wait() == 0
    final = report(instance)
    assert (final["result"], final["exit_code"], final["kept"]["messages"]) == ("clean", 0, 30)
    assert final["steps"][3]["outcome"] == "kept"
    status = instance.khronos("status")
    assert "clean" in status.stdout and "kept 30 messages" in status.stdout, status.stdout
    (instance.state_dir / "khronos.toml").write_text(FAST_CONFIG)  # Telegram's own pace again
    instance.start()
    backlog = instance.khronos("status", "--json")
    summary = json.loads(backlog.stdout)
    assert summary["state"] == "ready" and summary["messages_queued"] > 0, summary
    assert summary["last_shutdown"]["kept"]["messages"] == 30
    wait_for(lambda: len(instance.deliveries()) == 33, timeout=90)
    sent = Counter(str(d.get("text")) for d in instance.deliveries())
    assert sent == Counter(texts)  # none lost, none twice


def test_ready_answers_503_during_the_stop(make_instance: Any) -> None:
    """During a stop the public port stays open: /ready is 503 and new work is refused with 503,
    until the port closes at the end."""
    instance = make_instance(external_sandbox=True).start()
    instance.llm_mode("anthropic", mode="slow", delay=4.0)
    instance.push(8200, "hold the stop open")
    wait_for(lambda: instance.status().get("jobs_active") == 1, timeout=30)
    port = instance.status()["http_port"]
    instance.signal(signal.SIGTERM)
    wait_for(lambda: "stopping (deadline" in instance.log(), timeout=30)
    base = f"http://127.0.0.1:{port}"
    ready = httpx.get(f"{base}/ready", timeout=10)
    assert ready.status_code == 503 and ready.json() == {"ready": False}
    work = httpx.post(f"{base}/messages", json={"chat_id": 1, "text": "late"}, timeout=10)
    assert work.status_code == 503 and "Retry-After" in work.headers
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert instance.wait() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/ready", timeout=10)


def test_khronos_stop_uses_the_configured_deadline(make_instance: Any) -> None:
    """Without --timeout, `khronos stop` keeps `[shutdown] deadline` (3 s here, not 30 s): the
    stream says so, and a 20 s job is kept, not waited for: a clean stop."""
    config = (  # an answer that takes 20 s to begin: Anthropic's breaker and stream wait for it
        '[breakers.anthropic-api]\ntimeout = "30s"\n[anthropic]\nfirst_byte_timeout = "30s"\n'
        '[shutdown]\ndeadline = "3s"\njobs_timeout = "2s"\noutbox_timeout = "2s"\n'
    )
    instance = make_instance(config=config, external_sandbox=True).start()
    instance.llm_mode("anthropic", mode="slow", delay=20.0)
    instance.push(8300, "slow")
    wait_for(lambda: instance.status().get("jobs_active") == 1, timeout=30)
    stopped = instance.khronos("stop", "--json")
    assert stopped.returncode == 0, stopped.stderr
    events = [json.loads(line) for line in stopped.stdout.splitlines()]
    assert events[0]["deadline_s"] == 3.0
    done = events[-1]
    assert done["result"] == "clean" and done["kept"]["jobs"] == 1
    assert [s["outcome"] for s in done["steps"]][2] == "kept"
    instance.llm_mode("anthropic", mode="ok")
    assert instance.wait() == 0


@pytest.mark.parametrize("target", ["supervisor", "worker"])
def test_sighup_is_a_graceful_stop(make_instance: Any, target: str) -> None:
    """SIGHUP to `khronos run` or to its worker: logged, the seven steps, clean, exit 0."""
    instance = make_instance().start()
    if target == "supervisor":
        instance.signal(signal.SIGHUP)
    else:
        os.kill(instance.supervisor()["worker_pid"], signal.SIGHUP)
    assert instance.wait() == 0
    assert "SIGHUP: stopping (deadline" in instance.log()
    assert report(instance)["result"] == "clean"


@pytest.mark.parametrize("how", ["khronos stop", "SIGTERM"])
def test_stop_ends_a_worker_that_is_still_starting(make_instance: Any, how: str) -> None:
    """`khronos stop` or SIGTERM while the worker hangs in its start (webhook mode, Telegram's
    getMe never answers): the start is abandoned, the steps close what it opened, a clean stop,
    exit 0, nothing runs."""
    port = free_port()
    config = (
        f'[telegram]\nmode = "webhook"\nwebhook_url = "http://127.0.0.1:{port}/telegram/webhook"\n'
        '[breakers.telegram-api]\ntimeout = "60s"\n'
    )
    instance = make_instance(config=config, port=port, external_sandbox=True)
    instance.start_stand_ins()
    instance.admin.post("/_sandbox/failure", json={"mode": "hang", "methods": ["getMe"]})
    os.environ["KHRONOS_WEBHOOK_SECRET"] = "sandbox-webhook-secret-0123456789"
    try:
        instance.start(ready=False)
    finally:
        del os.environ["KHRONOS_WEBHOOK_SECRET"]
    wait_for(lambda: instance.status().get("state") == "starting", timeout=60)
    if how == "SIGTERM":
        instance.signal(signal.SIGTERM)
    else:
        stopped = instance.khronos("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "clean stop" in stopped.stderr
    assert instance.wait(timeout=20) == 0
    assert report(instance)["result"] == "clean"
