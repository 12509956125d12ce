"""The seven-step stop: order, events, budgets, the overall deadline, quick stop, the report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from khronos_cli.runtime.shutdown import STEP_NAMES, Shutdown, Step, read_report
from tests.support import async_wait_for

Detail = dict[str, Any] | None


def recorder(log: list[str], name: str, result: Detail = None):  # type: ignore[no-untyped-def]
    async def action() -> Detail:
        log.append(name)
        await asyncio.sleep(0)
        return result

    return action


def hang(log: list[str], name: str):  # type: ignore[no-untyped-def]
    async def action() -> Detail:
        log.append(name)
        await asyncio.Event().wait()
        return None

    return action


def seven(log: list[str], **overrides: Step) -> list[Step]:
    return [overrides.get(n, Step(n, recorder(log, n), budget=1.0)) for n in STEP_NAMES]


async def test_steps_run_in_order_with_events_and_a_clean_report(tmp_path: Path) -> None:
    """All seven steps run in order, each with started/finished events; the report says clean."""
    log: list[str] = []
    shutdown = Shutdown(seven(log), state_dir=tmp_path)
    report = await shutdown.start()
    assert log == list(STEP_NAMES)
    kinds = [(e["event"], e.get("step")) for e in shutdown.events]
    expected = [(k, n) for n in range(1, 8) for k in ("step_started", "step_finished")]
    assert kinds == [*expected, ("done", None)]
    assert report["result"] == "clean" and report["exit_code"] == 0 and report["hung_step"] is None
    assert [s["outcome"] for s in report["steps"]] == ["done"] * 7
    assert read_report(tmp_path) == json.loads(json.dumps(report))


async def test_a_step_past_its_budget_is_cancelled_and_named(tmp_path: Path) -> None:
    """A closing step that hangs is cancelled at its budget, named, and forces; later steps run."""
    log: list[str] = []
    cancelled = asyncio.Event()

    async def stuck() -> Detail:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return None

    steps = seven(log, database=Step("database", stuck, budget=0.05))
    report = await Shutdown(steps, state_dir=tmp_path).start()
    assert cancelled.is_set()
    assert report["steps"][4]["outcome"] == "timeout" and report["hung_step"] == "database"
    assert log == ["http", "telegram", "jobs", "outbox", "redis", "connections"]
    assert report["result"] == "forced" and report["exit_code"] == 1
    assert report["reason"] == "step 'database' hung past its budget"


async def test_a_wait_past_its_budget_keeps_its_work_and_stays_clean(tmp_path: Path) -> None:
    """A drain that runs out of its budget is 'kept' with its count: clean, exit 0."""
    log: list[str] = []

    async def kept_messages() -> Detail:
        return {"kept_messages": 30}

    outbox = Step(
        "outbox",
        hang(log, "outbox"),
        budget=0.05,
        wait=True,
        on_cut=kept_messages,
        waits_for=lambda: {"messages": 30},
    )
    shutdown = Shutdown(seven(log, outbox=outbox), state_dir=tmp_path)
    report = await shutdown.start()
    assert report["steps"][3]["outcome"] == "kept" and report["kept"]["messages"] == 30
    assert report["result"] == "clean" and report["exit_code"] == 0
    assert report["hung_step"] is None and report["reason"] is None
    started = [e for e in shutdown.events if e["event"] == "step_started"]
    assert started[3]["waiting"] == {"messages": 30} and "waiting" not in started[0]


async def test_overall_deadline_ends_the_waits_and_still_closes() -> None:
    """Past the overall deadline the running wait is kept, later waits skipped, and the closing
    steps still run within the grace: a clean stop."""
    log: list[str] = []
    steps = seven(log, jobs=Step("jobs", hang(log, "jobs"), budget=10.0, wait=True))
    steps[3] = Step("outbox", recorder(log, "outbox"), budget=10.0, wait=True)
    report = await Shutdown(steps, deadline=0.1).start()
    outcomes = [s["outcome"] for s in report["steps"]]
    assert outcomes == ["done", "done", "kept", "skipped", "done", "done", "done"]
    assert "outbox" not in log
    assert report["hung_step"] is None and report["exit_code"] == 0


async def test_steps_after_the_grace_are_skipped_not_failed() -> None:
    """A closing step hanging past the deadline and its grace is the hung one; the rest are
    'skipped'."""
    log: list[str] = []
    steps = seven(log, telegram=Step("telegram", hang(log, "telegram"), budget=10.0))
    report = await Shutdown(steps, deadline=0.05, quick_budget=0.05).start()
    outcomes = [s["outcome"] for s in report["steps"]]
    assert outcomes == ["done", "timeout"] + ["skipped"] * 5
    assert report["hung_step"] == "telegram" and report["result"] == "forced"


async def test_quick_stop_cuts_waits_keeps_work_and_still_closes() -> None:
    """force() cuts the running wait, skips later waits (keeping their work), and still closes."""
    log: list[str] = []

    async def kept_jobs() -> Detail:
        return {"kept_jobs": 4}

    async def kept_messages() -> Detail:
        return {"kept_messages": 2}

    steps = seven(
        log,
        jobs=Step("jobs", hang(log, "jobs"), budget=10.0, wait=True, on_cut=kept_jobs),
        outbox=Step("outbox", hang(log, "outbox"), budget=10.0, wait=True, on_cut=kept_messages),
    )
    shutdown = Shutdown(steps, quick_budget=2.0)
    task = shutdown.start()
    await async_wait_for(lambda: "jobs" in log)
    shutdown.force()
    report = await task
    outcomes = {s["name"]: s["outcome"] for s in report["steps"]}
    assert outcomes["jobs"] == "cut" and outcomes["outbox"] == "skipped"
    assert [outcomes[n] for n in ("database", "redis", "connections")] == ["done"] * 3
    assert "outbox" not in log  # skipped: its wait never started
    assert report["kept"] == {"jobs": 4, "messages": 2}
    assert report["result"] == "forced" and report["reason"] == "quick stop requested"
    assert any(e["event"] == "forced" for e in shutdown.events)


async def test_failing_step_is_reported_and_the_stop_goes_on() -> None:
    """A step that raises is 'failed' with the error, and the remaining steps run."""
    log: list[str] = []

    async def broken() -> Detail:
        raise RuntimeError("redis went away")

    report = await Shutdown(seven(log, redis=Step("redis", broken, budget=1.0))).start()
    step = report["steps"][5]
    assert step["outcome"] == "failed" and "redis went away" in step["detail"]["error"]
    assert log[-1] == "connections" and report["exit_code"] == 1


async def test_late_followers_get_the_whole_history() -> None:
    """A follower that joins mid-stop gets every event from the first, ending with done."""
    log: list[str] = []
    gate = asyncio.Event()

    async def gated() -> Detail:
        await gate.wait()
        return None

    shutdown = Shutdown(seven(log, jobs=Step("jobs", gated, budget=5.0, wait=True)))
    shutdown.start()
    await async_wait_for(lambda: len(shutdown.events) >= 5)

    async def collect() -> list[dict[str, Any]]:
        return [event async for event in shutdown.follow()]

    follower = asyncio.ensure_future(collect())
    await asyncio.sleep(0)
    gate.set()
    events = await follower
    assert events == shutdown.events and events[-1]["event"] == "done"
    assert events[0] == {"event": "step_started", "step": 1, "name": "http", "deadline_s": 30.0}
