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
    """A hung step is cancelled at its budget and named in the report; later steps still run."""
    log: list[str] = []
    cancelled = asyncio.Event()

    async def stuck() -> Detail:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return None

    steps = seven(log, outbox=Step("outbox", stuck, budget=0.05, wait=True))
    report = await Shutdown(steps, state_dir=tmp_path).start()
    assert cancelled.is_set()
    assert report["steps"][3]["outcome"] == "timeout" and report["hung_step"] == "outbox"
    assert log == ["http", "telegram", "jobs", "database", "redis", "connections"]
    assert report["result"] == "forced" and report["exit_code"] == 1


async def test_overall_deadline_cuts_every_remaining_step() -> None:
    """Past the overall deadline the running step and all after it end as 'deadline'."""
    log: list[str] = []
    steps = seven(log, jobs=Step("jobs", hang(log, "jobs"), budget=10.0, wait=True))
    report = await Shutdown(steps, deadline=0.1).start()
    outcomes = [s["outcome"] for s in report["steps"]]
    assert outcomes == ["done", "done", "deadline", "deadline", "deadline", "deadline", "deadline"]
    assert report["hung_step"] == "jobs" and report["exit_code"] == 1


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
    assert events[0] == {"event": "step_started", "step": 1, "name": "http"}
