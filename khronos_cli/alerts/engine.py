"""The worker's alerts: events in, one grouped message per window out, to each operator chat.

What feeds it: the worker's event hub (breaker transitions; ``backup`` events, see
:meth:`Alerts.on_event`), conditions it probes each tick (Redis lost, the outbox's backlog and
its oldest pending message: told on their edges), and one-off notices (a stop that was not
clean, a crash loop the worker recovered from, ``khronos alerts test``).

Where it goes: each window's lines are joined into **one** message per chat and recorded in the
outbox (SQLite) before anything is sent, so an alert outlives a Telegram outage and a restart;
the outbox sends it at bulk priority through the ``telegram`` limiter (a user's answer is
scheduled first) and the ``telegram-api`` breaker. While the database cannot record them (its
breaker open) they wait in memory and are recorded once it can; the webhook has them already.
A chat receives at most ``per_chat`` alert messages per period: what comes on top waits and is
merged into the next one. The webhook, if set, gets the same lines as JSON; it is best effort
(one try, a short timeout, failures logged).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import httpx

from khronos_cli.alerts.direct import HEADER
from khronos_cli.alerts.grouping import Event, Grouper, describe
from khronos_cli.errors import KhronosError
from khronos_cli.redaction import Scrubber
from khronos_cli.settings import AlertSettings

__all__ = ["MAX_TEXT", "Alerts", "Sink"]

logger = logging.getLogger("khronos.alerts")

MAX_TEXT = 3900  # below Telegram's 4,096 code points, with room for the header
WEBHOOK_TIMEOUT = 5.0


class Sink(Protocol):
    """Where alert messages go: the outbox (durable first, then sent)."""

    async def enqueue(self, chat_id: int, text: str) -> int:
        """Record the message (raises KhronosError when it cannot); its outbox id."""

    async def send(self, outbox_id: int, chat_id: int, text: str) -> bool:
        """Send the recorded message now; True once Telegram accepted it."""


Probe = Callable[[], str | None]  # a condition's detail while it holds, None otherwise


class Alerts:
    """Groups events per subject and window, and sends each window's lines to the operator."""

    def __init__(
        self,
        settings: AlertSettings,
        sink: Sink,
        *,
        label: str,
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        scrub: Scrubber | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.label = label
        self.clock, self.wall = clock, wall
        self.grouper = Grouper(settings.group_window, clock)
        self.tick = min(1.0, max(0.05, settings.group_window / 4))
        self._spawn = spawn
        self._scrub = scrub or Scrubber()
        self._probes: dict[str, Probe] = {}
        self._holding: dict[str, str] = {}  # subject -> detail of a condition that holds now
        self._held: dict[int, list[str]] = {chat: [] for chat in settings.chat_ids}
        self._sent_at: dict[int, collections.deque[float]] = {
            chat: collections.deque() for chat in settings.chat_ids
        }
        self._http = (
            httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, transport=transport)
            if settings.webhook_url
            else None
        )
        self._closing = False
        self._problem: str | None = None  # why the last tick could not record its alerts
        self.queued = 0  # alert messages recorded in the outbox
        self.webhook_failures = 0

    # -- what comes in --------------------------------------------------------------------------

    def notice(self, subject: str, what: str, detail: str) -> None:
        """An event: ``what`` is open/close (breakers), on/off (conditions) or once."""
        self.grouper.add(Event(subject, what, self._scrub(detail)[:500], self.wall()))

    def backup_failed(self, error: str) -> None:
        """The backup side's hook (or publish ``backup`` with ``kind="failed"`` on the hub)."""
        self.notice("backup", "once", error)

    def on_event(self, topic: str, fields: dict[str, Any]) -> None:
        """An :class:`~khronos_cli.runtime.events.EventHub` listener."""
        kind = fields.get("kind")
        if topic == "breaker":
            subject = f"breaker:{fields.get('breaker')}"
            if kind == "open":
                self.notice(subject, "open", str(fields.get("reason") or "tripped"))
            elif kind == "close":
                self.notice(subject, "close", "")
            elif kind == "forced" and fields.get("forced") == "open":
                self.grouper.amend(subject, f"forced open by the operator: {fields.get('reason')}")
        elif topic == "backup" and kind == "failed":
            self.backup_failed(str(fields.get("error") or "unknown error"))

    def watch(self, subject: str, probe: Probe) -> None:
        """Tell when ``probe`` starts returning a detail (on) and when it stops (off)."""
        self._probes[subject] = probe

    def snapshot(self) -> dict[str, Any]:
        """For ``khronos status --json``: where alerts go and what they did."""
        return {
            "chats": list(self.settings.chat_ids),
            "webhook": self._http is not None,
            "messages": self.queued,
            "grouping": self.grouper.waiting,
            "held": sum(len(lines) for lines in self._held.values()),
            "webhook_failures": self.webhook_failures,
        }

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: probe the conditions, send the windows that ended."""
        while True:
            try:
                self.probe()
                await self.flush()
            except (KhronosError, OSError, ValueError) as exc:
                problem = self._scrub(str(exc))
                if problem != self._problem:  # once, not every tick while it lasts
                    logger.warning("alerts kept in memory: %s", problem)
                self._problem = problem
            else:
                self._problem = None
            await asyncio.sleep(self.tick)

    def probe(self) -> None:
        for subject, probe in self._probes.items():
            detail = probe()
            was = self._holding.get(subject)
            if detail is not None and was is None:
                self._holding[subject] = detail
                self.notice(subject, "on", detail)
            elif detail is None and was is not None:
                del self._holding[subject]
                self.notice(subject, "off", "")

    async def flush(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """Send what is due (every open window with ``everything``); where each message went."""
        due = self.grouper.due(everything=everything)
        lines = [text for text, _ in due]
        if due and self._http is not None:
            self._spawn(self._post([describe(events) for _, events in due], lines), "alert-hook")
        for held in self._held.values():
            held.extend(lines)
        return [await self._deliver(chat) for chat in self._held if self._held[chat]]

    async def test(self, timeout: float = 10.0) -> dict[str, Any]:
        """``khronos alerts test``: one alert to every chat and the webhook now (no window, the
        per-chat rate still applies); waits up to ``timeout`` for Telegram to accept each."""
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(self.wall()))
        event = Event("test", "once", f"sent by `khronos alerts test` at {stamp}", self.wall())
        text = self.grouper.render([event])
        webhook = None if self._http is None else await self._post([describe([event])], [text])
        chats = []
        for chat, held in self._held.items():
            held.append(text)
            chats.append(await self._deliver(chat, wait=timeout))
        return {"chats": chats, "webhook": webhook}

    async def aclose(self) -> None:
        """At the stop: record every open window in the outbox (the stop's last outbox flush
        sends them, or the next start)."""
        self._closing = True
        with contextlib.suppress(KhronosError, OSError):
            await self.flush(everything=True)
        if self._http is not None:
            await self._http.aclose()

    # -- what goes out --------------------------------------------------------------------------

    def _room(self, chat: int) -> bool:
        """May ``chat`` receive another alert message now (``per_chat``)?"""
        sent, now = self._sent_at[chat], self.clock()
        longest = max((rate.period for rate in self.settings.per_chat), default=0.0)
        while sent and now - sent[0] > longest:
            sent.popleft()
        return all(
            sum(1 for at in sent if now - at <= rate.period) < rate.limit
            for rate in self.settings.per_chat
        )

    async def _deliver(self, chat: int, *, wait: float | None = None) -> dict[str, Any]:
        held = self._held[chat]
        if not self._room(chat):
            return {"chat_id": chat, "state": "held", "why": "per-chat alert rate", "lines": 0}
        text = self._message(held)
        outbox_id = await self.sink.enqueue(chat, text)  # durable before anything else
        count = len(held)
        held.clear()
        self._sent_at[chat].append(self.clock())
        self.queued += 1
        logger.info("alert to chat %d (outbox %d): %s", chat, outbox_id, text.replace("\n", " | "))
        sending = self.sink.send(outbox_id, chat, text)
        state = "queued"
        if self._closing:
            sending.close()  # the stop's outbox step sends what is recorded
        elif wait is None:
            self._spawn(sending, f"alert-{outbox_id}")
        else:
            with contextlib.suppress(TimeoutError):
                state = "sent" if await asyncio.wait_for(sending, wait) else "queued"
        return {"chat_id": chat, "outbox_id": outbox_id, "state": state, "lines": count}

    def _message(self, lines: list[str]) -> str:
        body, shown = "", 0
        for line in lines:
            if len(body) + len(line) + 3 > MAX_TEXT:
                break
            body += f"• {line}\n"
            shown += 1
        if shown < len(lines):
            body += f"… and {len(lines) - shown} more (see the log)\n"
        return (HEADER.format(label=self.label) + body).rstrip()

    async def _post(self, alerts: list[dict[str, Any]], lines: list[str]) -> dict[str, Any]:
        assert self._http is not None
        body = {"bot": self.label, "text": self._message(lines), "alerts": alerts}
        try:
            answer = await self._http.post(self.settings.webhook_url.reveal(), json=body)
        except httpx.HTTPError as exc:
            self.webhook_failures += 1
            why = self._scrub(f"{type(exc).__name__}: {exc}")
            logger.warning("alert webhook: %s", why)
            return {"state": "failed", "why": why}
        if answer.status_code >= 300:
            self.webhook_failures += 1
            logger.warning("alert webhook answered HTTP %d", answer.status_code)
            return {"state": "failed", "why": f"HTTP {answer.status_code}"}
        return {"state": "sent", "status": answer.status_code}
