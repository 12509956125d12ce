"""The ledger: did every user message that deserves an answer get exactly one?

**Which messages deserve an answer** (the rules the bot follows; :func:`deserves_answer` applies
them when a message is pushed and stores the verdict as ``UserMessage.expects_answer``):

- private chats: every message — text, voice note, command, and unsupported content too (a
  sticker gets a short "I can read text and voice" answer);
- groups and supergroups: only a command addressed to this bot (``/cmd`` bare or
  ``/cmd@<this bot's username>``, not ``/cmd@OtherBot``), a message mentioning
  ``@<this bot's username>`` (in its text or caption), and a reply to a message the bot sent;
- never: service messages (joins, leaves, pins, titles, ``migrate_*``), edits, channel posts and
  non-message updates (callback queries, ``my_chat_member``, reactions);
- a voice note over 20 MB or with an empty transcript still deserves one (a message saying why);
- a message to a user who blocked the bot cannot be delivered: it counts as ``undeliverable``,
  not ``unanswered`` (the user blocked the bot at or after the message's time).

**Answers in several parts.** A reply over 4,096 code points is split into ordered parts; only the
first part replies (``reply_to_message_id``) to the user's message, the next ones are plain
messages in the same chat, sent right after. So a delivery that replies to message *m* starts (or,
if *m* had one already, repeats) *m*'s answer, and a delivery that replies to nothing continues the
answer most recently started in its chat. Two exceptions: in a supergroup a group was **migrated**
to, a non-reply delivery is first taken as the (re)sent answer of the oldest still unanswered
message of the old group (the bot resends there without a reply, since the replied message is not
in the new chat); only once none waits does it continue an answer. A non-reply delivery in a chat
with no answer started is ``unmatched``. (So a multi-part answer resent after a migration while
two old messages wait is read as two answers: the ledger cannot tell them apart.)

The report (:class:`LedgerReport`):

- ``sent``: every message recorded (all kinds); ``expected``: those that deserve an answer;
  ``answered``: expected messages with an answer;
- ``unanswered`` / ``undeliverable``: expected messages with no answer (blocked or not);
- ``unexpected``: messages that deserve none but got an answer;
- ``duplicates``: answers sent twice — a second first part, or a continuation repeating a part;
- ``parts``: ``(message id, parts)`` of every answer sent in more than one part;
- ``fallbacks``: answered with the fallback text (both LLMs down);
- ``unmatched``: deliveries that answer no known message;
- ``kinds``: messages recorded per kind; latency percentiles from a message to its first part.

``exactly_once`` is the one-line verdict: every message that deserves an answer got exactly one
(possibly in parts), none that deserves none got any, nothing was sent twice. Records come from the
Python API (:meth:`Ledger.from_records`) or the admin API's JSON (:meth:`Ledger.from_json`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from khronos_cli.bot.messages import FALLBACK_TEXT
from khronos_cli.sandbox.entities import command_target, mentions
from khronos_cli.sandbox.records import KEYED_KINDS, Delivery, UserMessage

__all__ = ["FALLBACK_TEXT", "Latency", "Ledger", "LedgerReport", "deserves_answer"]

Key = tuple[int, int]  # (chat id, message id)
Periods = Iterable[tuple[float, float | None]]  # blocked from, until (None: still blocked)


def _period(pair: Iterable[float | None]) -> tuple[float, float | None]:
    since, until = list(pair)
    return float(since or 0.0), None if until is None else float(until)


def deserves_answer(message: Mapping[str, Any], bot: Mapping[str, Any]) -> bool:
    """Whether a user's ``message`` (Bot API JSON) deserves an answer from ``bot`` (its User)."""
    if message["chat"]["type"] == "private":
        return True
    if message["chat"]["type"] == "channel":
        return False
    text = message.get("text") or message.get("caption") or ""
    entities = message.get("entities") or message.get("caption_entities") or []
    username = str(bot.get("username", "")).lower()
    command = command_target(text, entities)
    if command is not None:
        return command[1] is None or command[1].lower() == username
    if username in (name.lower() for name in mentions(text, entities)):
        return True
    replied = message.get("reply_to_message") or {}
    return bool(replied.get("from", {}).get("id") == bot.get("id"))


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
    expected: int = 0
    undeliverable: tuple[int, ...] = ()
    unexpected: tuple[int, ...] = ()
    parts: tuple[tuple[int, int], ...] = ()
    kinds: Mapping[str, int] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        """Every message that deserves an answer got one, none got one it did not deserve,
        nothing was sent twice."""
        return not self.unanswered and not self.duplicates and not self.unexpected

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
            "expected": self.expected,
            "undeliverable": list(self.undeliverable),
            "unexpected": list(self.unexpected),
            "parts": [list(pair) for pair in self.parts],
            "kinds": dict(self.kinds),
        }

    def summary(self) -> str:
        """One line for logs and test failure messages."""
        p50 = "-" if self.latency.p50 is None else f"{self.latency.p50 * 1000:.0f}ms"
        p99 = "-" if self.latency.p99 is None else f"{self.latency.p99 * 1000:.0f}ms"
        return (
            f"sent={self.sent} answered={self.answered} unanswered={len(self.unanswered)} "
            f"duplicates={len(self.duplicates)} fallbacks={len(self.fallbacks)} "
            f"unmatched={self.unmatched} expected={self.expected} "
            f"unexpected={len(self.unexpected)} undeliverable={len(self.undeliverable)} "
            f"multipart={len(self.parts)} p50={p50} p99={p99}"
        )


@dataclass
class _Answer:
    parts: list[Delivery] = field(default_factory=list)
    starts: int = 0  # first parts seen: more than one means it was sent twice
    repeated: bool = False  # a continuation repeated an earlier part's text


class Ledger:
    """User messages and the bot's deliveries, joined as deliveries arrive."""

    def __init__(self, *, fallback_text: str = FALLBACK_TEXT) -> None:
        self.fallback_text = fallback_text
        self._sent: dict[Key, UserMessage] = {}
        self._kinds: Counter[str] = Counter()
        self._answers: dict[Key, _Answer] = {}  # also answers to messages not (yet) recorded
        self._latest: dict[int, Key] = {}  # chat -> the answer most recently started there
        self._waiting: dict[int, dict[Key, None]] = {}  # chat -> expected, unanswered, in order
        self._waiting_count = 0
        self._migrated_from: dict[int, list[int]] = {}  # supergroup -> the groups it was
        self._blocks: dict[int, list[tuple[float, float | None]]] = {}
        self._not_replies = 0  # non-reply deliveries that continue nothing

    @classmethod
    def from_records(
        cls,
        sent: Iterable[UserMessage],
        deliveries: Iterable[Delivery],
        *,
        fallback_text: str = FALLBACK_TEXT,
        migrations: Mapping[int, int] | None = None,
        blocks: Mapping[int, Periods] | None = None,
    ) -> Ledger:
        """A ledger of ``sent`` and ``deliveries``; ``migrations`` maps an old group id to its
        supergroup's, ``blocks`` a private chat to the periods its user blocked the bot."""
        ledger = cls(fallback_text=fallback_text)
        for old, new in (migrations or {}).items():
            ledger.record_migration(old, new)
        for chat_id, periods in (blocks or {}).items():
            for since, until in periods:
                ledger.record_block(chat_id, since, until)
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
        migrations: Mapping[str | int, int] | None = None,
        blocks: Mapping[str | int, Iterable[Iterable[float | None]]] | None = None,
    ) -> Ledger:
        """From the admin API's ``/_sandbox/messages`` and ``/_sandbox/deliveries`` items (and
        its ``/_sandbox/chats`` ``migrations`` and ``blocks``, whose keys are strings)."""
        periods = {int(chat): [_period(p) for p in ps] for chat, ps in (blocks or {}).items()}
        return cls.from_records(
            (UserMessage.from_json(item) for item in sent),
            (Delivery.from_json(item) for item in deliveries),
            fallback_text=fallback_text,
            migrations={int(old): int(new) for old, new in (migrations or {}).items()},
            blocks=periods,
        )

    # -- recording ---------------------------------------------------------------------------------

    def record_sent(self, message: UserMessage) -> None:
        """A user message (any kind); any answer seen earlier is matched to it."""
        key = (message.chat_id, message.message_id)
        if message.kind not in KEYED_KINDS:
            self._kinds[message.kind] += 1  # about another message: never answered itself
            return
        if key in self._sent:
            return
        self._sent[key] = message
        self._kinds[message.kind] += 1
        if message.expects_answer and key not in self._answers:
            self._waiting.setdefault(message.chat_id, {})[key] = None
            self._waiting_count += 1

    def record_delivery(self, delivery: Delivery) -> None:
        """A message the bot sent: a first part, a continuation, or a resend after a migration."""
        chat = delivery.chat_id
        if delivery.replies_to is not None:
            self._start((chat, delivery.replies_to), delivery)
            return
        resent = self._oldest_waiting_migrated(chat)
        if resent is not None:
            self._start(resent, delivery)
            return
        latest = self._latest.get(chat)
        if latest is None:
            self._not_replies += 1
            return
        answer = self._answers[latest]
        if any(part.text == delivery.text for part in answer.parts):
            answer.repeated = True
        answer.parts.append(delivery)

    def record_migration(self, old_chat_id: int, new_chat_id: int) -> None:
        """Group ``old_chat_id`` became supergroup ``new_chat_id``."""
        self._migrated_from.setdefault(new_chat_id, []).append(old_chat_id)

    def record_block(self, chat_id: int, since: float, until: float | None = None) -> None:
        """The user of private chat ``chat_id`` blocked the bot from ``since`` (to ``until``)."""
        self._blocks.setdefault(chat_id, []).append((since, until))

    def record_unblock(self, chat_id: int, at: float) -> None:
        """The user of ``chat_id`` unblocked the bot at ``at`` (ends the open block)."""
        periods = self._blocks.get(chat_id, [])
        if periods and periods[-1][1] is None:
            periods[-1] = (periods[-1][0], at)

    def _start(self, key: Key, delivery: Delivery) -> None:
        answer = self._answers.setdefault(key, _Answer())
        answer.starts += 1
        answer.parts.append(delivery)
        self._latest[delivery.chat_id] = key
        waiting = self._waiting.get(key[0])
        if waiting is not None and key in waiting:
            del waiting[key]
            self._waiting_count -= 1

    def _oldest_waiting_migrated(self, chat_id: int) -> Key | None:
        for old in self._migrated_from.get(chat_id, ()):
            waiting = self._waiting.get(old)
            if waiting:
                return next(iter(waiting))
        return None

    def _undeliverable(self, message: UserMessage) -> bool:
        periods = self._blocks.get(message.chat_id, ())
        return any(until is None or until >= message.at for _, until in periods)

    # -- reading -----------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Expected messages with no answer yet that can still get one (undeliverable ones do
        not wait); cheap enough to call on every delivery."""
        blocked = sum(
            1
            for chat in self._blocks
            for key in self._waiting.get(chat, ())
            if self._undeliverable(self._sent[key])
        )
        return self._waiting_count - blocked

    def answers(self, message: UserMessage) -> list[Delivery]:
        """The parts of ``message``'s answer seen so far (several when sent twice)."""
        answer = self._answers.get((message.chat_id, message.message_id))
        return [] if answer is None else list(answer.parts)

    def report(self) -> LedgerReport:
        unanswered: list[int] = []
        undeliverable: list[int] = []
        unexpected: list[int] = []
        duplicates: list[int] = []
        fallbacks: list[int] = []
        parts: list[tuple[int, int]] = []
        latencies: list[float] = []
        expected = 0
        for key, message in self._sent.items():
            answer = self._answers.get(key)
            if not message.expects_answer:
                if answer is not None:
                    unexpected.append(message.message_id)
                continue
            expected += 1
            if answer is None:
                missing = undeliverable if self._undeliverable(message) else unanswered
                missing.append(message.message_id)
                continue
            if answer.starts > 1 or answer.repeated:
                duplicates.append(message.message_id)
            if any(part.text == self.fallback_text for part in answer.parts):
                fallbacks.append(message.message_id)
            if len(answer.parts) > 1:
                parts.append((message.message_id, len(answer.parts)))
            latencies.append(max(0.0, answer.parts[0].at - message.at))
        orphans = sum(len(a.parts) for key, a in self._answers.items() if key not in self._sent)
        return LedgerReport(
            sent=sum(self._kinds.values()),
            answered=expected - len(unanswered) - len(undeliverable),
            unanswered=tuple(unanswered),
            duplicates=tuple(duplicates),
            fallbacks=tuple(fallbacks),
            unmatched=self._not_replies + orphans,
            latency=Latency.of(latencies),
            expected=expected,
            undeliverable=tuple(undeliverable),
            unexpected=tuple(unexpected),
            parts=tuple(parts),
            kinds=dict(self._kinds),
        )
