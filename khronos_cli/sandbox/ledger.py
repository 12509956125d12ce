"""The ledger: did every user message get exactly one answer?

It joins each :class:`~khronos_cli.sandbox.records.UserMessage` with the bot's
:class:`~khronos_cli.sandbox.records.Delivery` records by ``(chat_id, reply_to_message_id)`` —
the bot answers a message by replying to it, in its chat — and reports:

- ``sent``: user messages; ``answered``: those with at least one reply;
- ``unanswered`` / ``duplicates``: message ids with no reply / more than one reply;
- ``fallbacks``: message ids answered with the fallback text (both LLMs down);
- ``unmatched``: deliveries that answer no known message (wrong chat, no reply-to, ...);
- latency percentiles (nearest rank) from a message to its first reply, in seconds.

This is what the end-to-end tests assert "every simulated message is answered exactly once" with
(:attr:`LedgerReport.exactly_once`). Records can come from the Python API
(:meth:`Ledger.from_records`) or from the admin API's JSON (:meth:`Ledger.from_json`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from khronos_cli.sandbox.records import Delivery, UserMessage

__all__ = ["FALLBACK_TEXT", "Latency", "Ledger", "LedgerReport"]

FALLBACK_TEXT = "IA indisponível agora. Tente novamente em alguns segundos."


@dataclass(frozen=True)
class Latency:
    """Seconds from a user message to its first answer (None when nothing was answered)."""

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, samples: Iterable[float]) -> Latency:
        ordered = sorted(samples)
        if not ordered:
            return cls()

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(len(ordered), rank(0.50), rank(0.90), rank(0.99), ordered[-1])


@dataclass(frozen=True)
class LedgerReport:
    """Counts of a ledger at one moment; message ids are the user messages' ids."""

    sent: int
    answered: int
    unanswered: tuple[int, ...]
    duplicates: tuple[int, ...]
    fallbacks: tuple[int, ...]
    unmatched: int
    latency: Latency

    @property
    def exactly_once(self) -> bool:
        """Every message answered, none more than once."""
        return not self.unanswered and not self.duplicates

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "unanswered": list(self.unanswered),
            "duplicates": list(self.duplicates),
            "fallbacks": list(self.fallbacks),
            "unmatched": self.unmatched,
            "exactly_once": self.exactly_once,
            "latency": asdict(self.latency),
        }

    def summary(self) -> str:
        """One line for logs and test failure messages."""
        p50 = "-" if self.latency.p50 is None else f"{self.latency.p50 * 1000:.0f}ms"
        p99 = "-" if self.latency.p99 is None else f"{self.latency.p99 * 1000:.0f}ms"
        return (
            f"sent={self.sent} answered={self.answered} unanswered={len(self.unanswered)} "
            f"duplicates={len(self.duplicates)} fallbacks={len(self.fallbacks)} "
            f"unmatched={self.unmatched} p50={p50} p99={p99}"
        )


class Ledger:
    """User messages and the bot's deliveries, joined on demand by :meth:`report`."""

    def __init__(self, *, fallback_text: str = FALLBACK_TEXT) -> None:
        self.fallback_text = fallback_text
        self._sent: dict[tuple[int, int], UserMessage] = {}
        self._answers: dict[tuple[int, int], list[Delivery]] = {}
        self._orphans: dict[tuple[int, int], list[Delivery]] = {}  # replies to unknown messages
        self._not_replies = 0  # deliveries that reply to nothing
        self._waiting = 0  # sent messages with no answer yet

    @classmethod
    def from_records(
        cls,
        sent: Iterable[UserMessage],
        deliveries: Iterable[Delivery],
        *,
        fallback_text: str = FALLBACK_TEXT,
    ) -> Ledger:
        ledger = cls(fallback_text=fallback_text)
        for message in sent:
            ledger.record_sent(message)
        for delivery in deliveries:
            ledger.record_delivery(delivery)
        return ledger

    @classmethod
    def from_json(
        cls,
        sent: Iterable[Mapping[str, Any]],
        deliveries: Iterable[Mapping[str, Any]],
        *,
        fallback_text: str = FALLBACK_TEXT,
    ) -> Ledger:
        """From the admin API's ``/_sandbox/messages`` and ``/_sandbox/deliveries`` items."""
        return cls.from_records(
            (UserMessage.from_json(item) for item in sent),
            (Delivery.from_json(item) for item in deliveries),
            fallback_text=fallback_text,
        )

    def record_sent(self, message: UserMessage) -> None:
        """A user message that must be answered; any reply seen earlier is matched to it."""
        key = (message.chat_id, message.message_id)
        if key in self._sent:
            return
        self._sent[key] = message
        self._answers[key] = early = self._orphans.pop(key, [])
        if not early:
            self._waiting += 1

    def record_delivery(self, delivery: Delivery) -> None:
        """A message the bot sent."""
        if delivery.reply_to_message_id is None:
            self._not_replies += 1
            return
        key = (delivery.chat_id, delivery.reply_to_message_id)
        if key in self._sent:
            answers = self._answers[key]
            answers.append(delivery)
            if len(answers) == 1:
                self._waiting -= 1
        else:
            self._orphans.setdefault(key, []).append(delivery)

    @property
    def waiting(self) -> int:
        """How many recorded messages have no answer yet (O(1), unlike :meth:`report`)."""
        return self._waiting

    def answers(self, message: UserMessage) -> list[Delivery]:
        """The replies to ``message`` seen so far."""
        return list(self._answers.get((message.chat_id, message.message_id), []))

    def report(self) -> LedgerReport:
        unanswered: list[int] = []
        duplicates: list[int] = []
        fallbacks: list[int] = []
        latencies: list[float] = []
        for key, message in self._sent.items():
            replies = self._answers[key]
            if not replies:
                unanswered.append(message.message_id)
                continue
            if len(replies) > 1:
                duplicates.append(message.message_id)
            if any(reply.text == self.fallback_text for reply in replies):
                fallbacks.append(message.message_id)
            latencies.append(max(0.0, replies[0].at - message.at))
        return LedgerReport(
            sent=len(self._sent),
            answered=len(self._sent) - len(unanswered),
            unanswered=tuple(unanswered),
            duplicates=tuple(duplicates),
            fallbacks=tuple(fallbacks),
            unmatched=self._not_replies + sum(map(len, self._orphans.values())),
            latency=Latency.of(latencies),
        )
