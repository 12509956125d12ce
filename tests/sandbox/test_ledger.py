"""The ledger's join of user messages and bot replies: answered, duplicates, fallbacks, latency."""

from __future__ import annotations

from khronos_cli.sandbox import FALLBACK_TEXT, Delivery, Ledger, UserMessage
from khronos_cli.sandbox.ledger import Latency
from khronos_cli.sandbox.records import MessageKind


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


def message(
    message_id: int,
    chat_id: int = 1,
    *,
    expects: bool = True,
    kind: MessageKind = "text",
    at: float = 0,
) -> UserMessage:
    text = f"m{message_id}"
    return UserMessage(message_id, message_id, chat_id, 7, text, kind, at, expects_answer=expects)


def test_a_multi_part_answer_counts_once_with_its_parts() -> None:
    """A first part replying to the message and two plain parts right after make one answer in
    three parts; the next reply starts another answer."""
    report = Ledger.from_records(
        [message(1), message(2)],
        [reply(1, text="a"), reply(None, text="b"), reply(None, text="c"), reply(2, text="d")],
    ).report()
    assert report.exactly_once, report.summary()
    assert (report.answered, report.unmatched) == (2, 0)
    assert report.parts == ((1, 3),)
    assert report.to_json()["parts"] == [[1, 3]]


def test_parts_attach_per_chat() -> None:
    """A plain part continues the answer most recently started in its own chat, not another."""
    ledger = Ledger.from_records(
        [message(1, chat_id=1), message(2, chat_id=2)],
        [reply(1, chat_id=1, text="a"), reply(2, chat_id=2, text="x"), reply(None, chat_id=1)],
    )
    assert [d.text for d in ledger.answers(message(1, chat_id=1))] == ["a", "ok"]
    assert ledger.report().parts == ((1, 2),)


def test_answers_to_messages_that_deserve_none_are_unexpected() -> None:
    """A reply to a service message or to unaddressed group chatter is unexpected, and then
    exactly_once is false; messages that deserve none and got none are fine."""
    report = Ledger.from_records(
        [
            message(1, chat_id=-5, expects=False, kind="service"),
            message(2, chat_id=-5, expects=False),
            message(3, chat_id=-5),
            message(4, chat_id=-5, expects=False),
        ],
        [reply(1, chat_id=-5), reply(2, chat_id=-5), reply(3, chat_id=-5)],
    ).report()
    assert report.unexpected == (1, 2)
    assert (report.expected, report.answered, report.unanswered) == (1, 1, ())
    assert not report.exactly_once
    assert report.kinds == {"service": 1, "text": 3}


def test_sent_twice_is_a_duplicate_first_part_or_a_repeated_part() -> None:
    """A second first part, or a continuation repeating an earlier part of the same answer, is a
    duplicate; different parts are not."""
    report = Ledger.from_records(
        [message(1), message(2), message(3)],
        [
            reply(1, text="a"),
            reply(1, text="a"),
            reply(2, text="x"),
            reply(None, text="y"),
            reply(None, text="x"),
            reply(3, text="p"),
            reply(None, text="q"),
        ],
    ).report()
    assert report.duplicates == (1, 2)
    assert report.parts == ((1, 2), (2, 3), (3, 2))
    assert not report.exactly_once


def test_a_blocked_users_message_is_undeliverable_not_unanswered() -> None:
    """With no answer, a message whose user blocked the bot at or after it is undeliverable; one
    sent after an unblock is unanswered again; neither waits."""
    ledger = Ledger.from_records(
        [message(1, chat_id=9, at=1.0), message(2, chat_id=9, at=5.0), message(3, at=1.0)],
        [reply(3)],
        blocks={9: [(2.0, 4.0)]},
    )
    report = ledger.report()
    assert (report.undeliverable, report.unanswered) == ((1,), (2,))
    assert ledger.waiting == 1
    ledger.record_block(9, 6.0)
    assert ledger.report().undeliverable == (1, 2)
    assert ledger.waiting == 0
    assert ledger.report().exactly_once


def test_a_migrated_groups_message_is_answered_in_the_supergroup() -> None:
    """After a migration the bot's plain resend in the supergroup answers the oldest waiting
    message of the old group; a later plain part continues it."""
    ledger = Ledger.from_records(
        [message(1, chat_id=-5), message(2, chat_id=-5), message(3, chat_id=-5)],
        [
            reply(1, chat_id=-5),
            reply(None, chat_id=-1000000000005, text="for 2"),
            reply(None, chat_id=-1000000000005, text="for 3"),
            reply(None, chat_id=-1000000000005, text="3, part 2"),
        ],
        migrations={-5: -1000000000005},
    )
    report = ledger.report()
    assert report.exactly_once, report.summary()
    assert [d.text for d in ledger.answers(message(3, chat_id=-5))] == ["for 3", "3, part 2"]
    assert report.unmatched == 0


def test_the_new_keys_survive_json() -> None:
    """Expected-ness, kinds, migrations and blocks round-trip through the admin API's JSON."""
    sent = [message(1, chat_id=9), message(2, chat_id=-5, expects=False, kind="service")]
    deliveries = [reply(2, chat_id=-5)]
    direct = Ledger.from_records(sent, deliveries, blocks={9: [(0.0, None)]}).report()
    rebuilt = Ledger.from_json(
        [m.to_json() for m in sent],
        [d.to_json() for d in deliveries],
        blocks={"9": [[0.0, None]]},
        migrations={"-5": -1000000000005},
    ).report()
    assert rebuilt == direct
    assert direct.to_json()["undeliverable"] == [1]
    assert direct.to_json()["unexpected"] == [2]
    old = {k: v for k, v in sent[0].to_json().items() if k != "expects_answer"}
    assert UserMessage.from_json(old).expects_answer is True
