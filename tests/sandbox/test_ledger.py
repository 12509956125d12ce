"""The ledger's join of user messages and bot replies: answered, duplicates, fallbacks, latency."""

from __future__ import annotations

from khronos_cli.sandbox import FALLBACK_TEXT, Delivery, Ledger, UserMessage
from khronos_cli.sandbox.ledger import Latency


def sent(message_id: int, chat_id: int = 1, at: float = 0.0) -> UserMessage:
    return UserMessage(message_id, message_id, chat_id, chat_id, f"m{message_id}", "text", at)


def reply(
    to: int | None, chat_id: int = 1, text: str = "ok", at: float = 1.0, message_id: int = 100
) -> Delivery:
    return Delivery(message_id, chat_id, text, to, None, at)


def test_counts_answered_unanswered_duplicates_fallbacks_unmatched() -> None:
    """Each message is joined with its replies by chat and reply-to id, and counted once."""
    ledger = Ledger.from_records(
        [sent(1), sent(2), sent(3), sent(4), sent(5, chat_id=2)],
        [
            reply(1),
            reply(2),
            reply(2),  # a duplicate answer
            reply(3, text=FALLBACK_TEXT),
            reply(5, chat_id=1),  # right id, wrong chat: answers nothing we sent
            reply(None),  # not a reply at all
        ],
    )
    report = ledger.report()
    assert report.sent == 5
    assert report.answered == 3
    assert report.unanswered == (4, 5)
    assert report.duplicates == (2,)
    assert report.fallbacks == (3,)
    assert report.unmatched == 2
    assert not report.exactly_once
    assert ledger.waiting == 2


def test_exactly_once_when_every_message_has_one_reply() -> None:
    """exactly_once holds when each message got exactly one reply."""
    report = Ledger.from_records([sent(1), sent(2)], [reply(2), reply(1)]).report()
    assert report.exactly_once
    assert report.summary().startswith("sent=2 answered=2 unanswered=0 duplicates=0")


def test_a_reply_seen_before_its_message_still_counts() -> None:
    """A delivery recorded before its message (listener order) is matched once the message is."""
    ledger = Ledger()
    ledger.record_delivery(reply(7))
    ledger.record_sent(sent(7))
    report = ledger.report()
    assert (report.answered, report.unmatched, ledger.waiting) == (1, 0, 0)


def test_latency_percentiles_use_the_first_reply() -> None:
    """Latency is first reply minus message time, with nearest-rank percentiles."""
    messages = [sent(i, at=float(i)) for i in range(1, 11)]
    replies = [reply(i, at=i + i / 8) for i in range(1, 11)]  # 0.125 s .. 1.25 s
    replies.append(reply(1, at=50.0))  # a late duplicate does not move message 1's latency
    latency = Ledger.from_records(messages, replies).report().latency
    assert latency.count == 10
    assert latency.p50 == 0.625
    assert latency.p90 == 1.125
    assert latency.p99 == 1.25
    assert latency.max == 1.25


def test_empty_ledger_has_no_latency() -> None:
    """With nothing answered, latency fields are None rather than made-up zeros."""
    assert Ledger().report().latency == Latency()


def test_json_round_trip_gives_the_same_report() -> None:
    """A ledger rebuilt from the records' JSON (the admin API's) reports the same."""
    messages = [sent(1), sent(2)]
    replies = [reply(1, text=FALLBACK_TEXT), reply(1)]
    direct = Ledger.from_records(messages, replies).report()
    rebuilt = Ledger.from_json(
        [m.to_json() for m in messages], [d.to_json() for d in replies]
    ).report()
    assert rebuilt == direct
    assert direct.to_json()["duplicates"] == [1]
    assert direct.to_json()["exactly_once"] is False


def test_custom_fallback_text() -> None:
    """The fallback text that counts as a fallback answer is configurable."""
    report = Ledger.from_records([sent(1)], [reply(1, text="sorry")], fallback_text="sorry")
    assert report.report().fallbacks == (1,)
