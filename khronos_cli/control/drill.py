"""The drill engine behind ``khronos outage drill``: a rehearsed outage with a verdict.

A drill is an experiment on the live bot, run from outside it through the control socket only
(the CLI never imports the runtime):

1. **steady state before**: the worker is ``ready``, the breaker is ``closed`` and not forced, and
   no outage is active on it. Otherwise the drill refuses to start (exit 1, with the reason).
2. **the outage**: ``POST /outages`` with an expiry of ``--for`` + 5 s (at most 15 min: a safety
   net that does not race the drill's own end), then ``GET /breakers`` every 100 ms until the
   breaker is ``open`` (``--expect-open-within``).
3. **users served**: the worker's counters (``GET /status``: ``updates_accepted`` and
   ``answered``) before the outage and when it ends tell whether the messages that arrived during
   it were answered by the path meant to take over:

   - ``anthropic-api``: OpenAI or the fallback text (``answered.openai + answered.fallback``);
   - ``openai-api``: it is the fallback, so the users' own path goes on — any answer counts;
   - ``telegram-api`` and ``database``: nobody can be answered while they are down, by design
     (Telegram keeps the updates, replies wait in the outbox), so the check is *not applicable*.

   No update during the outage is not a deviation (a quiet bot), unless ``--require-traffic``.
4. **the end**: ``DELETE /outages/NAME`` once ``--for`` has passed (at once when the breaker did
   not open in time), then ``GET /breakers`` until the breaker leaves ``open``
   (``--expect-recovery-within``). Half-open counts as recovered: the health check reached the
   dependency and the next call is a trial, and a quiet bot makes no call that could close it.

The outage is ended in a ``finally``: on any error, on Ctrl-C and on SIGTERM (both become
:class:`DrillInterrupted` while the drill runs, and are only noted while the outage is ended). Its
own expiry is the second safety net, for a ``kill -9``. :meth:`Drill.report` is the verdict as
JSON; the command (``cli/drill.py``) prints it and exits 0 when every check passed, 1 otherwise.
The engine speaks only to a :class:`ControlClient` (no typer, no rich).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

from khronos_cli.control.client import ControlClient
from khronos_cli.control.protocol import MAX_DURATION
from khronos_cli.errors import KhronosError

__all__ = ["SERVED_BY", "Check", "Drill", "DrillInterrupted", "interrupt", "on_signals"]

EXPIRY_GRACE = 5.0  # the outage expires this long after the drill means to end it: a net, no race
POLL = 0.1  # seconds between reads of the control socket while waiting for a state
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Which answer counters show that users were served during an outage of each dependency;
# None: nobody can be answered while it is down (the work waits, nothing is lost).
SERVED_BY: dict[str, tuple[str, ...] | None] = {
    "anthropic-api": ("openai", "fallback"),
    "openai-api": ("anthropic", "openai", "fallback", "command"),
    "telegram-api": None,
    "database": None,
}


class DrillInterrupted(BaseException):
    """SIGINT or SIGTERM arrived while the drill ran (not an error: the drill ends cleanly)."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


@dataclass
class Check:
    """One line of the verdict. ``passed`` is None when the check did not apply or did not run."""

    check: str
    passed: bool | None = None
    seconds: float | None = None
    limit_s: float | None = None
    detail: str = ""


@contextmanager
def on_signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM with ``handler`` inside the block, then restore what was."""
    previous = {signum: signal.signal(signum, handler) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise DrillInterrupted(signum)


class Drill:
    """The drill's steps against one control socket; :meth:`run` never leaves the outage on."""

    def __init__(
        self,
        control: ControlClient,
        spec: dict[str, Any],
        *,
        open_within: float,
        recovery_within: float,
        require_traffic: bool,
        say: Callable[[str], None],
    ) -> None:
        self.control = control
        self.spec = spec
        self.name = str(spec["name"])
        self.open_within = open_within
        self.recovery_within = recovery_within
        self.require_traffic = require_traffic
        self.say = say
        self.checks: list[Check] = []
        self.interrupted: str | None = None
        self.traffic: dict[str, Any] = {}
        self._started = False
        self._ended = False
        self._cleared = False  # the outage is known to be over
        self.expiry = min(float(spec["for"]) + EXPIRY_GRACE, MAX_DURATION)

    # -- the report -----------------------------------------------------------------------------

    @property
    def passed(self) -> bool:
        return self.interrupted is None and all(c.passed is not False for c in self.checks)

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.spec["mode"],
            "for_s": self.spec["for"],
            "passed": self.passed,
            "interrupted": self.interrupted,
            "checks": [asdict(check) for check in self.checks],
            "traffic": self.traffic,
        }

    def _check(self, name: str, **fields: Any) -> Check:
        check = Check(name, **fields)
        self.checks.append(check)
        return check

    # -- the steps ------------------------------------------------------------------------------

    def run(self) -> None:
        """Steady state, outage, end, recovery; the outage is ended whatever happens."""
        try:
            if not self.steady_state():
                return
            try:
                self.outage()
            except KhronosError as exc:
                self._check("control", passed=False, detail=f"the drill broke off: {exc}")
        except DrillInterrupted as exc:
            self.interrupted = exc.signal_name
        finally:
            self._end_safely()
        try:
            if self.interrupted is None and self._cleared:
                self.recovery()
        except DrillInterrupted as exc:
            self.interrupted = exc.signal_name
        except KhronosError as exc:
            self._check("recovered", passed=False, detail=f"the drill broke off: {exc}")
        if self.interrupted is not None:
            self.say(f"interrupted by {self.interrupted}")

    def _end_safely(self) -> None:
        """End the outage with the signals only noted; one arriving just before is noted too."""

        def note(signum: int, frame: FrameType | None) -> None:
            self.interrupted = self.interrupted or signal.Signals(signum).name

        while not self._ended:
            try:
                with on_signals(note):
                    self.end_outage()
            except DrillInterrupted as exc:  # between the finally and the shield: try again
                self.interrupted = self.interrupted or exc.signal_name
            if not self._started:
                return

    def steady_state(self) -> bool:
        status = self.control.get("/status")
        breaker = self.control.get("/breakers").get(self.name)
        outages = [o for o in self.control.get("/outages") if o.get("name") == self.name]
        problems = []
        if status.get("state") != "ready":
            problems.append(f"the worker is {status.get('state')}, not ready")
        if breaker is None:
            problems.append(f"the worker has no breaker named {self.name}")
        else:
            if breaker.get("state") != "closed":
                problems.append(f"breaker {self.name} is {breaker.get('state')}, not closed")
            if breaker.get("forced"):
                forced = breaker["forced"]
                problems.append(
                    f"breaker {self.name} is forced {forced.get('state')} ({forced.get('reason')})"
                )
        if outages:
            problems.append(f"an outage is already active on {self.name}")
        detail = "; ".join(problems) or f"worker ready, {self.name} closed, no outage on it"
        self._check("steady_state", passed=not problems, detail=detail)
        if problems:
            self.say(f"refused to start the drill: {detail}")
        return not problems

    def outage(self) -> None:
        before = self.control.get("/status")
        began = time.monotonic()
        self._started = True  # from here on the finally ends it, even if the answer is lost
        self.control.post("/outages", {**self.spec, "for": self.expiry})
        self.say(f"outage {self.name}: {self.spec['mode']} for {self.spec['for']:g}s")
        state, took = self._watch(lambda s: s == "open", self.open_within)
        opened = self._check(
            "breaker_opened", passed=took is not None, seconds=took, limit_s=self.open_within
        )
        if took is None:
            opened.detail = f"still {state} after {self.open_within:g}s"
            self.say(f"breaker {self.name} did not open in time: ending the outage now")
        else:
            opened.detail = f"open after {took:.2f}s"
            self.say(f"breaker {self.name} open after {took:.2f}s; holding the outage")
            time.sleep(max(0.0, began + float(self.spec["for"]) - time.monotonic()))
        self.served(before, self.control.get("/status"))

    def served(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        updates = int(after.get("updates_accepted", 0)) - int(before.get("updates_accepted", 0))
        old, new = before.get("answered") or {}, after.get("answered") or {}
        answered = {key: int(new.get(key, 0)) - int(old.get(key, 0)) for key in new}
        self.traffic = {"updates": updates, "answered": answered}
        paths = SERVED_BY.get(self.name)
        if paths is None:
            waits = f"not applicable: nobody is answered while {self.name} is down; "
            self._check("users_served", detail=waits + "the work waits and is answered after it")
            return
        served = sum(answered.get(key, 0) for key in paths)
        counts = ", ".join(f"{answered.get(key, 0)} {key}" for key in paths)
        if updates <= 0 and served == 0:
            quiet = "no user traffic arrived during the outage"
            self._check(
                "users_served",
                passed=not self.require_traffic,
                detail=quiet + (" (--require-traffic)" if self.require_traffic else ""),
            )
            return
        self._check(
            "users_served",
            passed=served > 0,
            detail=f"{updates} update(s) during the outage, answered: {counts}",
        )

    def end_outage(self) -> None:
        if not self._started or self._ended:
            return
        began = time.monotonic()
        try:
            ended = self.control.delete(f"/outages/{self.name}")
            left = [o for o in self.control.get("/outages") if o.get("name") == self.name]
        except KhronosError as exc:
            self._ended = True  # reported, not retried: the expiry is the safety net
            self._check(
                "outage_ended",
                passed=False,
                detail=f"could not end it ({exc}); it expires by itself within {self.expiry:g}s",
            )
            return
        self._ended, self._cleared = True, not left
        how = "ended by the drill" if ended else "had expired by itself"
        self._check(
            "outage_ended",
            passed=not left,
            seconds=round(time.monotonic() - began, 3),
            detail=how if not left else "still active after DELETE",
        )
        self.say(f"outage {self.name}: {how}")

    def recovery(self) -> None:
        """Seconds from the outage's end until the breaker leaves open (half-open counts)."""
        state, took = self._watch(lambda s: s != "open", self.recovery_within)
        late = f"still open after {self.recovery_within:g}s"
        detail = late if took is None else f"{state} after {took:.2f}s"
        self._check(
            "recovered",
            passed=took is not None,
            seconds=took,
            limit_s=self.recovery_within,
            detail=detail,
        )
        self.say(f"breaker {self.name}: {detail}")

    def _watch(self, wanted: Callable[[str], bool], within: float) -> tuple[str, float | None]:
        """Poll the breaker's state until ``wanted``: (last state, seconds taken or None)."""
        began = time.monotonic()
        while True:
            state = str((self.control.get("/breakers").get(self.name) or {}).get("state"))
            took = time.monotonic() - began
            if wanted(state):
                return state, round(took, 3)
            if took >= within:
                return state, None
            # The polling period of a watch on the worker's state, not a wait for an event.
            time.sleep(min(POLL, within - took))
