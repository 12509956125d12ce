"""The seven-step stop as an ordered table, run against one overall deadline.

Each :class:`Step` is (name, action, budget, wait). The runner starts them in order; each emits
``step_started`` (with what it waits for: ``jobs`` running, ``messages`` queued) and
``step_finished`` (outcome, duration) to every subscriber — the log and the control socket's
stream.

A step's outcome (:data:`OUTCOMES`):

- ``done``: it finished;
- ``kept``: a *wait* step (jobs, outbox) ran out of its budget or of the overall deadline: what it
  did not finish is kept in the database for the next start and counted (``kept_jobs``,
  ``kept_messages``). Waiting on a slow LLM or a rate-limited outbox is not a failure;
- ``cut``: a quick stop cut a wait short (its work kept the same way);
- ``skipped``: not run: the waits of a quick stop, or a step whose turn came after the deadline
  and its grace (``quick_budget``) had passed;
- ``timeout``: a closing step hung past its budget and was abandoned;
- ``failed``: it raised.

The result (:data:`RESULTS`): ``clean`` (exit 0) when every step is ``done``, ``kept`` or
``skipped`` by the deadline without anything hanging, whatever work was kept; ``forced`` (exit 1)
after a quick stop, or when a step hung (``timeout``) or failed (``hung_step`` names it). A run
that ended without a report reads as ``killed`` (see the worker and ``khronos status``).

The waits end at the deadline; the closing steps (which release files and sockets) still run
after it, within ``quick_budget`` more seconds. :meth:`Shutdown.force` (a second SIGINT,
``khronos stop --force``) switches to a quick stop: the waits are cut or skipped and everything
ends within ``quick_budget`` more seconds.

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

__all__ = ["OUTCOMES", "REPORT_FILE", "RESULTS", "STEP_NAMES", "Shutdown", "Step", "read_report"]

logger = logging.getLogger("khronos.shutdown")

Detail = dict[str, Any]

OUTCOMES = ("done", "kept", "cut", "skipped", "timeout", "failed")
RESULTS = {"clean": 0, "forced": 1}
_FINE = ("done", "kept", "skipped")


@dataclass(frozen=True)
class Step:
    """One shutdown step.

    ``wait`` steps (jobs, outbox) are skipped or cut short by a quick stop. ``on_cut`` runs when
    the action did not finish (cut, timed out, skipped): it keeps the unfinished work for the next
    start and returns what it kept (``kept_jobs``, ``kept_messages``). ``waits_for`` says, as
    the step starts, what it waits for (``{"jobs": 2}``, ``{"messages": 30}``).
    """

    name: str
    action: Callable[[], Awaitable[Detail | None]]
    budget: float
    wait: bool = False
    on_cut: Callable[[], Awaitable[Detail | None]] | None = None
    waits_for: Callable[[], Detail] | None = None


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
            if result["outcome"] in ("timeout", "failed") and hung is None:
                hung = step.name
        clean = not self.forced and hung is None
        if self.forced:
            reason: str | None = "quick stop requested"
        elif hung is not None:
            failed = next(r for r in results if r["name"] == hung)["outcome"] == "failed"
            reason = f"step {hung!r} " + ("failed" if failed else "hung past its budget")
        else:
            reason = None
        verdict = "clean" if clean else "forced"
        report = {
            "event": "done",
            "result": verdict,
            "exit_code": RESULTS[verdict],
            "reason": reason,
            "hung_step": hung,
            "started_at": wall,
            "duration_s": round(self.clock() - begin, 3),
            "steps": results,
            "kept": kept,
            "pid": os.getpid(),
        }
        self.report = report
        self._write(report)
        self._emit(report)
        return report

    async def _step(self, number: int, step: Step) -> dict[str, Any]:
        started: dict[str, Any] = {
            "event": "step_started",
            "step": number,
            "name": step.name,
            "deadline_s": self.deadline,
        }
        if step.waits_for is not None:
            try:
                started["waiting"] = step.waits_for()
            except Exception as exc:  # a count is a courtesy; the step runs regardless
                logger.debug("shutdown step %s: could not count its work: %s", step.name, exc)
        self._emit(started)
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
        log = logger.info if outcome in (*_FINE, "cut") else logger.warning
        kept = {k: v for k, v in (detail or {}).items() if k.startswith("kept_") and v}
        log(
            "shutdown step %d %s: %s in %.3fs%s",
            number,
            step.name,
            outcome,
            result["duration_s"],
            "".join(f"; {k.replace('_', ' ')}: {v}" for k, v in kept.items()),
        )
        return result

    async def _attempt(self, step: Step) -> tuple[str, Detail | None]:
        assert self._end_at is not None
        if self.forced and step.wait:
            return "skipped", await self._cut(step)
        # The waits end at the deadline; the closing steps still get its grace after it.
        end = self._end_at if step.wait or self.forced else self._end_at + self.quick_budget
        if self.clock() >= end:
            return "skipped", await self._cut(step)
        step_end = self.clock() + step.budget
        task = asyncio.ensure_future(step.action())
        self._current, self._current_wait = task, step.wait
        try:
            while (left := min(step_end, end) - self.clock()) > 0:
                if self.forced:  # a quick stop: the closing step ends by the quick end
                    end = min(end, self._end_at)
                    await asyncio.wait({task}, timeout=max(0.0, min(step_end, end) - self.clock()))
                    break
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
        if step.wait:  # its work is kept for the next start: not a hang
            return ("cut" if self.forced else "kept"), await self._cut(step)
        return "timeout", await self._cut(step)

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
