"""The seven-step stop as an ordered table, run against one overall deadline.

Each :class:`Step` is (name, action, budget, wait). The runner starts them in order; each emits
``step_started`` and ``step_finished`` (outcome, duration) to every subscriber — the log and the
control socket's stream — and is bounded by its budget: past it the action is cancelled
(``timeout``) and the stop goes on. Past the overall deadline every remaining step is cancelled and
the result is ``forced``, naming the step that hung.

:meth:`Shutdown.force` (a second SIGINT, ``khronos stop --force``) switches to a quick stop: the
*wait* steps (jobs, outbox) are cut or skipped, the closing steps still run, and everything ends
within ``quick_budget`` more seconds. What was cut is not lost: the actions keep it for the next
start and say how much in their detail (``kept_jobs``, ``kept_messages``).

The final report (``done`` event) is also written to ``<state-dir>/last-shutdown.json`` (0600,
never through a symlink).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from khronos_cli import statedir
from khronos_cli.control.protocol import STEP_NAMES
from khronos_cli.statedir import REPORT_FILE

__all__ = ["REPORT_FILE", "STEP_NAMES", "Shutdown", "Step", "read_report"]

logger = logging.getLogger("khronos.shutdown")

Detail = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One shutdown step.

    ``wait`` steps (jobs, outbox) are skipped or cut short by a quick stop. ``on_cut`` runs when
    the action did not finish (cut, timed out, skipped): it keeps the unfinished work for the next
    start and returns what it kept (``kept_jobs``, ``kept_messages``).
    """

    name: str
    action: Callable[[], Awaitable[Detail | None]]
    budget: float
    wait: bool = False
    on_cut: Callable[[], Awaitable[Detail | None]] | None = None


def read_report(state_dir: Path) -> dict[str, Any] | None:
    return statedir.read_json(state_dir / REPORT_FILE)


class Shutdown:
    """Runs the steps once; any number of subscribers can follow it, late ones get the history."""

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        deadline: float = 30.0,
        quick_budget: float = 2.0,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.steps = list(steps)
        self.deadline = deadline
        self.quick_budget = quick_budget
        self.state_dir = state_dir
        self.clock = clock
        self.events: list[dict[str, Any]] = []
        self.report: dict[str, Any] | None = None
        self.forced = False
        self._new_event = asyncio.Event()
        self._forced_event = asyncio.Event()
        self._current: asyncio.Future[Detail | None] | None = None
        self._current_wait = False
        self._end_at: float | None = None
        self._task: asyncio.Task[dict[str, Any]] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> asyncio.Task[dict[str, Any]]:
        """Start the stop (idempotent): the task's result is the final report."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="khronos-shutdown"
            )
        return self._task

    def force(self) -> None:
        """Switch to a quick stop: cut the waits, finish within ``quick_budget`` more seconds."""
        if self.forced:
            return
        self.forced = True
        quick_end = self.clock() + self.quick_budget
        self._end_at = quick_end if self._end_at is None else min(self._end_at, quick_end)
        self._emit({"event": "forced", "quick_budget_s": self.quick_budget})
        self._forced_event.set()
        if self._current is not None and self._current_wait:
            self._current.cancel()

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Every event so far, then each new one, until the ``done`` event."""
        seen = 0
        while True:
            while seen < len(self.events):
                event = self.events[seen]
                seen += 1
                yield event
                if event["event"] == "done":
                    return
            await self._new_event.wait()

    # -- the run --------------------------------------------------------------------------------

    async def _run(self) -> dict[str, Any]:
        begin = self.clock()
        wall = time.time()
        if self._end_at is None:
            self._end_at = begin + self.deadline
        results: list[dict[str, Any]] = []
        hung: str | None = None
        kept = {"jobs": 0, "messages": 0}
        for number, step in enumerate(self.steps, start=1):
            result = await self._step(number, step)
            results.append(result)
            detail = result.get("detail") or {}
            kept["jobs"] += int(detail.get("kept_jobs", 0))
            kept["messages"] += int(detail.get("kept_messages", 0))
            if result["outcome"] in ("timeout", "deadline") and hung is None:
                hung = step.name
        clean = (
            not self.forced
            and hung is None
            and all(r["outcome"] in ("done", "skipped") for r in results)
        )
        report = {
            "event": "done",
            "result": "clean" if clean else "forced",
            "exit_code": 0 if clean else 1,
            "reason": "quick stop requested" if self.forced else (
                f"step {hung!r} ran past its budget" if hung else None
            ),
            "hung_step": hung,
            "started_at": wall,
            "duration_s": round(self.clock() - begin, 3),
            "steps": results,
            "kept": kept,
            "pid": os.getpid(),
        }  # fmt: skip
        self.report = report
        self._write(report)
        self._emit(report)
        return report

    async def _step(self, number: int, step: Step) -> dict[str, Any]:
        self._emit({"event": "step_started", "step": number, "name": step.name})
        begin = self.clock()
        outcome, detail = await self._attempt(step)
        result = {
            "step": number,
            "name": step.name,
            "outcome": outcome,
            "duration_s": round(self.clock() - begin, 3),
            "detail": detail,
        }
        self._emit({"event": "step_finished", **result})
        log = logger.info if outcome in ("done", "skipped") else logger.warning
        kept = {k: v for k, v in (detail or {}).items() if k.startswith("kept_") and v}
        log("shutdown step %d %s: %s in %.3fs%s", number, step.name, outcome, result["duration_s"],
            "".join(f"; {k.replace('_', ' ')}: {v}" for k, v in kept.items()))  # fmt: skip
        return result

    async def _attempt(self, step: Step) -> tuple[str, Detail | None]:
        assert self._end_at is not None
        if self.forced and step.wait:
            return "skipped", await self._cut(step)
        step_end = self.clock() + step.budget
        task = asyncio.ensure_future(step.action())
        self._current, self._current_wait = task, step.wait
        try:
            while (left := min(step_end, self._end_at) - self.clock()) > 0:
                forced = asyncio.ensure_future(self._forced_event.wait())
                await asyncio.wait({task, forced}, timeout=left, return_when="FIRST_COMPLETED")
                forced.cancel()
                if task.done():
                    break
        finally:
            self._current = None
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is None:
                return "done", task.result()
            logger.error("shutdown step %s failed: %s: %s", step.name, type(error).__name__, error)
            return "failed", {"error": f"{type(error).__name__}: {error}"}
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)  # let it unwind
        if self.forced and step.wait:
            outcome = "cut"
        else:
            outcome = "timeout" if self.clock() >= step_end else "deadline"
        return outcome, await self._cut(step)

    async def _cut(self, step: Step) -> Detail | None:
        """Let an unfinished step keep its work for the next start, briefly bounded."""
        if step.on_cut is None:
            return None
        try:
            return await asyncio.wait_for(step.on_cut(), 1.0)
        except Exception as exc:
            logger.error("shutdown step %s could not keep its work: %s", step.name, exc)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        waiters, self._new_event = self._new_event, asyncio.Event()
        waiters.set()

    def _write(self, report: dict[str, Any]) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / REPORT_FILE
        try:
            statedir.write_private(path, json.dumps(report, indent=1))
        except (OSError, statedir.StateDirError) as exc:
            logger.error("could not write %s: %s", path, exc)
