"""Injected outages: Toxiproxy's vocabulary, inside the process, against the live bot.

A TCP proxy such as Toxiproxy cannot sit in front of HTTPS APIs without certificate tricks, so
khronos injects faults where its own calls leave: a transport wrapper for the HTTP
dependencies (``anthropic-api``, ``telegram-api``, ``openai-api``; :mod:`.transport`) and a
``before_call`` hook for the SQLite store (``database``). The breakers above see the same
exceptions and status codes a real outage produces, so ``khronos outage start anthropic-api
--mode down --for 30s`` really trips the ``anthropic-api`` breaker.

Modes, per dependency:

- ``down``: the connection is refused (``httpx.ConnectError``; :class:`InjectedFaultError` for
  the database).
- ``timeout``: nothing comes back. The call waits for the request's own read timeout and raises
  ``httpx.ReadTimeout``; with no timeout it hangs until cancelled or until the outage ends.
- ``slow``: ``latency`` ± ``jitter`` seconds are added, then the call goes through (a delay at or
  past the read timeout becomes that timeout, as a slow server would).
- ``errors``: a synthetic HTTP 503 (or 429 with ``Retry-After`` and a body shaped like the
  provider's own) is answered without touching the network.

Every outage has an expiry (default 60 s, at most 15 min) so a forgotten drill heals itself; it is
ended lazily on the next lookup and by a loop timer, whichever comes first. ``probability`` makes
only a share of calls fail (Toxiproxy's *toxicity*), drawn from an injectable ``random.Random``.
The registry lives in memory only: a restart ends every outage. With no outage active, a call
costs one dict lookup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from khronos_cli.control.protocol import MAX_DURATION, OUTAGE_MODES
from khronos_cli.errors import InjectedFaultError, OutageError

__all__ = [
    "DEFAULT_DURATION",
    "MAX_DURATION",
    "FaultInjector",
    "InjectedFaultError",
    "Mode",
    "Outage",
    "OutageError",
    "OutageEvent",
]

Mode = Literal["down", "timeout", "slow", "errors"]
MODES: tuple[str, ...] = get_args(Mode)
assert MODES == OUTAGE_MODES  # what crosses the control socket is defined there
DEFAULT_DURATION = 60.0
_MAX_DEFAULT_RETRY_AFTER = 60.0

_log = logging.getLogger("khronos.faults")


@dataclass(frozen=True)
class Outage:
    """One injected outage. ``remaining_s``, ``hits`` (calls it failed, slowed or held so far)
    and ``held`` (calls hanging in it right now) are as of the moment it was handed out."""

    name: str
    mode: Mode
    probability: float
    duration: float
    expires_at: float  # on the injector's clock (monotonic by default)
    started_at: float  # unix time, for people; expiry never reads it
    remaining_s: float
    latency: float = 1.0
    jitter: float = 0.0
    status: int = 503
    retry_after: float | None = None
    reason: str = ""
    hits: int = 0
    held: int = 0

    def to_dict(self) -> dict[str, object]:
        """The JSON shape the control socket and ``khronos outage list --json`` print."""
        data = dataclasses.asdict(self)
        del data["expires_at"]
        data["remaining_s"] = round(self.remaining_s, 3)
        return data


@dataclass(frozen=True)
class OutageEvent:
    """``started`` or ``ended``; ``cause`` says why one ended: expired, stopped or replaced."""

    kind: Literal["started", "ended"]
    outage: Outage
    cause: str | None = None


Listener = Callable[[OutageEvent], object]


class _Entry:
    """An active outage plus its expiry timer and the event hung calls wait on."""

    __slots__ = ("ended", "held", "hits", "outage", "timer")

    def __init__(self, outage: Outage) -> None:
        self.outage = outage
        self.timer: asyncio.TimerHandle | None = None
        self.ended = asyncio.Event()
        self.hits = 0
        self.held = 0

    def snapshot(self, now: float) -> Outage:
        remaining = max(0.0, self.outage.expires_at - now)
        return dataclasses.replace(
            self.outage, remaining_s=remaining, hits=self.hits, held=self.held
        )


class FaultInjector:
    """The registry of active outages, one per dependency name, in memory."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._entries: dict[str, _Entry] = {}
        self._listeners: list[Listener] = []

    # -- registry -------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        mode: str = "down",
        *,
        duration: float = DEFAULT_DURATION,
        probability: float = 1.0,
        latency: float = 1.0,
        jitter: float = 0.0,
        status: int = 503,
        retry_after: float | None = None,
        reason: str = "",
    ) -> Outage:
        """Start an outage on ``name``, replacing any active one there; raises OutageError."""
        _validate(name, mode, duration, probability, latency, jitter, status, retry_after)
        now = self._clock()
        outage = Outage(
            name=name,
            mode=mode,  # type: ignore[arg-type]  # checked by _validate
            probability=float(probability),
            duration=float(duration),
            expires_at=now + duration,
            started_at=time.time(),
            remaining_s=float(duration),
            latency=float(latency),
            jitter=float(jitter),
            status=status,
            retry_after=retry_after,
            reason=reason,
        )
        self._end(name, "replaced")
        entry = _Entry(outage)
        self._entries[name] = entry
        self._arm(entry, duration)
        _log.warning("outage started: %s %s for %gs (p=%g)", name, mode, duration, probability)
        self._emit(OutageEvent("started", outage))
        return outage

    def stop(self, name: str | None = None) -> list[Outage]:
        """End the outage on ``name``, or every outage; returns the outages that were ended."""
        self._expire()
        names = list(self._entries) if name is None else [name]
        return [outage for n in names if (outage := self._end(n, "stopped")) is not None]

    def active(self) -> list[Outage]:
        """The active outages, sorted by name, each with its remaining seconds as of now."""
        now = self._expire()
        return [entry.snapshot(now) for _, entry in sorted(self._entries.items())]

    def get(self, name: str) -> Outage | None:
        """The active outage on ``name``, if any (no probability draw)."""
        entry = self._live(name)
        return None if entry is None else entry.snapshot(self._clock())

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every start and end; its errors are logged, not raised."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- the hot path ---------------------------------------------------------------------------

    def hit(self, name: str) -> Outage | None:
        """The outage this one call falls into: None when there is none or the draw spared it."""
        if not self._entries:
            return None
        entry = self._live(name)
        if entry is None:
            return None
        probability = entry.outage.probability
        if probability >= 1.0 or self._rng.random() < probability:
            entry.hits += 1
            return entry.snapshot(self._clock())
        return None

    def delay(self, outage: Outage) -> float:
        """The latency a ``slow`` outage adds to one call: latency ± jitter, never negative."""
        if not outage.jitter:
            return outage.latency
        return max(0.0, outage.latency + self._rng.uniform(-outage.jitter, outage.jitter))

    async def hang(self, outage: Outage, timeout: float | None) -> None:
        """Wait ``timeout`` seconds, or (with None) until cancelled or the outage ends."""
        if timeout is not None:
            await asyncio.sleep(timeout)
            return
        entry = self._entries.get(outage.name)
        same = (outage.started_at, outage.expires_at)
        if entry is None or (entry.outage.started_at, entry.outage.expires_at) != same:
            return  # ended (or replaced) before we got here
        entry.held += 1
        try:
            await entry.ended.wait()
        finally:
            entry.held -= 1

    async def before_call(self, name: str, *, timeout: float | None = None) -> None:
        """Apply the outage on ``name`` to a non-HTTP call (the store's ``database``).

        ``down`` and ``errors`` raise :class:`InjectedFaultError`; ``timeout`` waits ``timeout``
        seconds (or until cancelled / the outage ends) and raises it; ``slow`` sleeps and returns.
        """
        outage = self.hit(name)
        if outage is None:
            return
        if outage.mode == "slow":
            await asyncio.sleep(self.delay(outage))
            return
        if outage.mode == "timeout":
            await self.hang(outage, timeout)
            raise InjectedFaultError(name, "timeout")
        status = outage.status if outage.mode == "errors" else None
        raise InjectedFaultError(name, outage.mode, status)

    def retry_after(self, outage: Outage) -> int:
        """Whole seconds for a 429's ``Retry-After``: as set, else what remains (at most 60)."""
        if outage.retry_after is not None:
            return max(1, math.ceil(outage.retry_after))
        return max(1, math.ceil(min(outage.remaining_s, _MAX_DEFAULT_RETRY_AFTER)))

    # -- internals ------------------------------------------------------------------------------

    def _live(self, name: str) -> _Entry | None:
        entry = self._entries.get(name)
        if entry is not None and self._clock() >= entry.outage.expires_at:
            self._end(name, "expired")
            return None
        return entry

    def _expire(self) -> float:
        now = self._clock()
        for name in [n for n, e in self._entries.items() if now >= e.outage.expires_at]:
            self._end(name, "expired")
        return now

    def _end(self, name: str, cause: str) -> Outage | None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return None
        if entry.timer is not None:
            entry.timer.cancel()
        entry.ended.set()
        _log.warning("outage ended: %s (%s)", name, cause)
        self._emit(OutageEvent("ended", entry.outage, cause))
        return entry.outage

    def _arm(self, entry: _Entry, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: expiry stays lazy
        entry.timer = loop.call_later(max(delay, 0.0), self._on_timer, entry)

    def _on_timer(self, entry: _Entry) -> None:
        if self._entries.get(entry.outage.name) is not entry:
            return
        remaining = entry.outage.expires_at - self._clock()
        if remaining > 0:  # the loop fired a hair early, or the clock is not the loop's
            self._arm(entry, remaining)
        else:
            self._end(entry.outage.name, "expired")

    def _emit(self, event: OutageEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                _log.exception("outage listener %r failed on %s", listener, event.kind)


def _validate(
    name: str,
    mode: str,
    duration: float,
    probability: float,
    latency: float,
    jitter: float,
    status: int,
    retry_after: float | None,
) -> None:
    def number(value: object) -> bool:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )

    if not isinstance(name, str) or not name:
        raise OutageError(f"outage name {name!r}: expected a dependency name like 'anthropic-api'")
    if mode not in MODES:
        raise OutageError(f"outage mode {mode!r}: expected one of {', '.join(MODES)}")
    if not number(duration) or not 0 < duration <= MAX_DURATION:
        raise OutageError(
            f"outage duration {duration!r}: expected above 0 and at most {MAX_DURATION:g}s (15 min)"
        )
    if not number(probability) or not 0 <= probability <= 1:
        raise OutageError(f"outage probability {probability!r}: expected 0 to 1")
    if not number(latency) or latency < 0 or not number(jitter) or jitter < 0:
        raise OutageError(f"outage latency {latency!r} ± {jitter!r}: expected seconds >= 0")
    if (
        isinstance(status, bool)
        or not isinstance(status, int)
        or not (status == 429 or 500 <= status <= 599)
    ):
        raise OutageError(f"outage status {status!r}: expected 429 or 500-599")
    if retry_after is not None and (not number(retry_after) or retry_after < 0):
        raise OutageError(f"outage retry_after {retry_after!r}: expected seconds >= 0")
