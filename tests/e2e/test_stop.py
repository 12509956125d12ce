"""The seven-step stop and the supervisor, with real signals on a real process tree."""

from __future__ import annotations

import json
import signal
from typing import Any

from khronos_cli.control.protocol import STEP_NAMES
from tests.instance import FAST_CONFIG, Instance, alive, crashing, khronos, report
from tests.support import wait_for


def processes_of(instance: Instance) -> list[int]:
    """The worker's and the sandbox's pids, for the no-orphans checks."""
    pids = [instance.status().get("pid")]
    if instance.sandbox_process is None:
        pids.append(instance.sandbox().get("pid"))
    return [pid for pid in pids if isinstance(pid, int)]


def answered(instance: Instance, count: int) -> bool:
    ledger = instance.ledger()
    return ledger["sent"] == count and not ledger["unanswered"]


def test_idle_sigterm_runs_the_seven_steps_in_order_and_exits_0(instance: Instance) -> None:
    """SIGTERM to `khronos run`: seven steps in order, all done, exit 0, nothing left running."""
    left = processes_of(instance)
    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    final = report(instance)
    assert [s["name"] for s in final["steps"]] == list(STEP_NAMES)
    assert all(s["outcome"] == "done" for s in final["steps"])
    assert final["result"] == "clean" and final["exit_code"] == 0
    for pid in left:
        wait_for(lambda pid=pid: not alive(pid), timeout=20)


def test_khronos_stop_streams_the_steps_and_exits_0(instance: Instance) -> None:
    """`khronos stop --json` streams step events 1..7 then done; the bot exits 0."""
    stopped = instance.khronos("stop", "--json")
    assert stopped.returncode == 0, stopped.stderr
    events = [json.loads(line) for line in stopped.stdout.splitlines()]
    started = [e["step"] for e in events if e["event"] == "step_started"]
    assert started == list(range(1, 8))
    assert events[-1]["event"] == "done" and events[-1]["result"] == "clean"
    assert instance.wait() == 0
    again = instance.khronos("stop")
    assert again.returncode == 3  # nothing runs any more


def test_plain_stop_output_names_each_step(instance: Instance) -> None:
    """Without a terminal `khronos stop` prints one line per step and the summary."""
    stopped = instance.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[2].rstrip(":") for line in lines] == list(STEP_NAMES)
    assert "clean stop" in stopped.stderr


def test_slow_jobs_in_flight_are_waited_for_and_answered(make_instance: Any) -> None:
    """A stop while answers are on their way waits for them: every message is answered."""
    instance = make_instance(external_sandbox=True).start()
    instance.llm_mode("anthropic", mode="slow", delay=1.0)
    for i in range(5):
        instance.push(7000 + i, f"slow {i}")
    wait_for(lambda: instance.status().get("jobs_active") == 5, timeout=30)
    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    assert report(instance)["steps"][2]["outcome"] == "done"
    assert answered(instance, 5) and instance.ledger()["duplicates"] == []


def test_a_job_past_step_3s_budget_is_kept_and_answered_once_after_restart(
    make_instance: Any,
) -> None:
    """A job slower than step 3's budget is kept (a clean stop, exit 0), and answered exactly
    once next start."""
    config = FAST_CONFIG + '[shutdown]\njobs_timeout = "1s"\n'
    instance = make_instance(config=config, external_sandbox=True).start()
    instance.llm_mode("anthropic", mode="slow", delay=5.0)
    for i in range(3):
        instance.push(7100 + i, f"too slow {i}")
    wait_for(lambda: instance.status().get("jobs_active") == 3, timeout=30)
    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    final = report(instance)
    assert final["steps"][2]["outcome"] == "kept" and final["hung_step"] is None
    assert final["kept"]["jobs"] == 3
    instance.llm_mode("anthropic", mode="ok")
    instance.start()
    wait_for(lambda: answered(instance, 3), timeout=60)
    assert instance.ledger()["duplicates"] == []
    assert instance.status()["last_shutdown"]["result"] == "clean"


def test_a_second_sigint_is_a_quick_stop_that_loses_nothing(make_instance: Any) -> None:
    """SIGINT twice: the waits are cut, exit 1, and the cut work is answered after restart."""
    instance = make_instance(external_sandbox=True).start()
    instance.llm_mode("anthropic", mode="slow", delay=20.0)
    for i in range(3):
        instance.push(7200 + i, f"quick {i}")
    wait_for(lambda: instance.status().get("jobs_active") == 3, timeout=30)
    instance.signal(signal.SIGINT)
    # Step 3 (the jobs' wait) runs once step 2 is done: a second SIGINT before that would skip
    # the wait rather than cut it (a busy machine showed it).
    wait_for(lambda: "shutdown step 2 " in instance.log(), timeout=30)
    instance.signal(signal.SIGINT)
    assert instance.wait() == 1
    final = report(instance)
    assert final["result"] == "forced" and final["reason"] == "quick stop requested"
    assert final["steps"][2]["outcome"] == "cut" and final["kept"]["jobs"] == 3
    instance.llm_mode("anthropic", mode="ok")
    instance.start()
    wait_for(lambda: answered(instance, 3), timeout=60)
    assert instance.ledger()["duplicates"] == []


def test_a_repeated_sigterm_is_ignored(make_instance: Any) -> None:
    """A second SIGTERM during the stop is logged and ignored: the stop stays graceful."""
    instance = make_instance(external_sandbox=True).start()
    instance.llm_mode("anthropic", mode="slow", delay=1.5)
    instance.push(7300, "hold on")
    wait_for(lambda: instance.status().get("jobs_active") == 1, timeout=30)
    instance.signal(signal.SIGTERM)
    wait_for(lambda: "stopping (deadline" in instance.log(), timeout=30)
    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    assert "SIGTERM during the stop: ignored" in instance.log()
    assert answered(instance, 1)


def test_a_crash_loop_is_shown_and_retries_go_on(make_instance: Any) -> None:
    """A worker that cannot start (its database cannot open) reaches crashloop, shown by status."""
    config = FAST_CONFIG + (
        '[supervisor]\nrestart_delay = "0.05s"\nmax_restart_delay = "0.2s"\ncrashloop_after = 3\n'
    )
    instance = crashing(make_instance(config=config)).start(ready=False)
    wait_for(lambda: instance.supervisor().get("state") == "crashloop", timeout=60)
    status = instance.khronos("status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["state"] == "crashloop" and data["last_exit"]["code"] == 1
    assert data["last_lines"]
    restarts = data["restarts"]
    wait_for(lambda: instance.supervisor().get("restarts", 0) > restarts + 1, timeout=30)
    instance.signal(signal.SIGTERM)
    # 0 when SIGTERM lands in a backoff pause; 1 when it kills a worker still starting (before
    # its handlers), which the supervisor reports as the worker's failure.
    assert instance.wait() in (0, 1)


def test_detach_returns_once_ready_and_stop_ends_it(tmp_path: Any) -> None:
    """`run --detach` returns when the worker is ready; `khronos stop` ends it, exit 0."""
    state = tmp_path / "state"
    run = khronos(
        "run",
        "--detach",
        "--sandbox",
        "--users",
        "0",
        "--port",
        "0",
        "--state-dir",
        str(state),
        timeout=90,
    )
    assert run.returncode == 0, run.stderr
    assert "is running" in run.stderr
    detached = Instance(tmp_path)
    status = detached.status()
    assert status["state"] == "ready"
    stopped = detached.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not alive(status["pid"]), timeout=30)
    supervisor = json.loads((state / "supervisor.json").read_text())
    wait_for(lambda: not alive(supervisor["pid"]), timeout=30)


def test_no_supervise_runs_the_worker_alone(make_instance: Any) -> None:
    """`run --no-supervise` is the worker itself (for systemd/pm2/k8s): SIGTERM, exit 0, clean."""
    instance = make_instance(args=("--no-supervise",)).start()
    status = instance.status()
    assert instance.process is not None and status["pid"] == instance.process.pid
    assert not status["supervised"]
    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    assert report(instance)["result"] == "clean"


def test_cut_jobs_are_counted_in_the_log(make_instance: Any) -> None:
    """A wait that runs out of its budget says how much it kept, in the log as well as the
    report, and the stop is clean."""
    config = FAST_CONFIG + '[shutdown]\njobs_timeout = "0.5s"\n'
    instance = make_instance(config=config, external_sandbox=True).start()
    instance.llm_mode("anthropic", mode="slow", delay=5.0)
    instance.push(7400, "slow")
    instance.push(7401, "slower")
    wait_for(lambda: instance.status().get("jobs_active") == 2, timeout=30)
    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    assert "shutdown step 3 jobs: kept" in instance.log()
    assert "kept jobs: 2" in instance.log()
