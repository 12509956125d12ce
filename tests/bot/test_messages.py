"""Splitting a long reply into Telegram messages, and reading who a group message addresses."""

from __future__ import annotations

from typing import Any

import pytest

from khronos_cli.bot.bot import conversation
from khronos_cli.bot.messages import MAX_MESSAGE, split_message
from khronos_cli.bot.updates import Identity, deserves_answer, read_update

ME = Identity(7000000001, "khronos_sandbox_bot")


def test_a_reply_that_fits_is_one_part() -> None:
    """4,096 code points exactly is one message; surrounding whitespace is trimmed."""
    text = "é" * MAX_MESSAGE
    assert split_message(f"  {text}\n") == [text]


def test_parts_break_at_paragraphs_then_lines_then_words() -> None:
    """The cut lands on the last paragraph break in a part's second half, else a line break,
    else a space, and never leaves a part over the limit or empty."""
    paragraphs = "\n\n".join(f"paragraph {i} " + " ".join(["word"] * 40) for i in range(10))
    parts = split_message(paragraphs, limit=500)
    assert all(0 < len(p) <= 500 for p in parts)
    assert all(p.startswith("paragraph") for p in parts)
    assert "\n\n".join(parts) == paragraphs.strip()
    lines = "\n".join("line " + "x" * 30 for _ in range(40))
    assert all(p.startswith("line") for p in split_message(lines, limit=200))
    words = " ".join(["palavra"] * 200)
    assert all(not p.endswith(" ") and p.startswith("palavra") for p in split_message(words, 100))


def test_an_unbroken_run_is_cut_at_the_limit_in_code_points() -> None:
    """A 10,000-emoji string (20,000 UTF-16 units) is cut at 4,096 code points per part."""
    parts = split_message("🚀" * 10_000)
    assert [len(p) for p in parts] == [4096, 4096, 1808]


def test_an_echo_of_a_4090_character_message_is_two_parts() -> None:
    """The sandbox's echo of a 4,090-character message (over the limit) fits in two parts that
    together say all of it."""
    user = " ".join(["palavra"] * 511)[:4090]
    reply = f"anthropic echo: {user}"
    parts = split_message(reply)
    assert len(reply) > MAX_MESSAGE and len(parts) == 2
    assert " ".join(parts) == reply


def test_history_starts_with_a_user_turn_and_alternates() -> None:
    """Leading assistant turns are dropped, same-role runs merged, empty turns skipped."""
    past = [
        ("assistant", "orphan"),
        ("user", "a"),
        ("user", "b"),
        ("assistant", ""),
        ("assistant", "c"),
        ("assistant", "d"),
    ]
    assert conversation(past, "e") == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "c\n\nd"},
        {"role": "user", "content": "e"},
    ]
    assert conversation([("user", "unanswered")], "again") == [
        {"role": "user", "content": "unanswered\n\nagain"}
    ]


def message(chat: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "update_id": 1,
        "message": {"message_id": 5, "chat": chat, "from": {"id": 42}, **fields},
    }


GROUP = {"id": -100, "type": "group", "title": "g"}
PRIVATE = {"id": 42, "type": "private"}


@pytest.mark.parametrize(
    ("update", "answered"),
    [
        (message(PRIVATE, text="hi"), True),
        (message(PRIVATE, sticker={"file_id": "s"}), True),
        (message(PRIVATE, pinned_message={"message_id": 1}), False),
        (message(GROUP, new_chat_members=[{"id": 1}]), False),
        (message(GROUP, left_chat_member={"id": 1}), False),
        (message(GROUP, new_chat_title="t"), False),
        (message(GROUP, migrate_to_chat_id=-1001), False),
        (message(GROUP, text="just chatting"), False),
        (message(GROUP, text="/help"), True),
        (message(GROUP, text="/help@khronos_sandbox_bot please"), True),
        (message(GROUP, text="/help@OtherBot"), False),
        (
            message(
                GROUP,
                text="ei @khronos_sandbox_bot, tudo bem?",
                entities=[{"type": "mention", "offset": 3, "length": 20}],
            ),
            True,
        ),
        (
            message(
                GROUP,
                text="ei @other_bot",
                entities=[{"type": "mention", "offset": 3, "length": 10}],
            ),
            False,
        ),
        (message(GROUP, text="oi", reply_to_message={"from": {"id": ME.id}}), True),
        (message(GROUP, text="oi", reply_to_message={"from": {"id": 9}}), False),
        ({"update_id": 1, "edited_message": {"chat": PRIVATE, "text": "x"}}, False),
        ({"update_id": 1, "callback_query": {"id": "1", "data": "x"}}, False),
    ],
)
def test_who_gets_an_answer(update: dict[str, Any], answered: bool) -> None:
    """Private messages with content get answers; service messages, edits, other updates, and
    group messages not addressed to this bot do not."""
    assert deserves_answer(read_update(update, 0), ME, "addressed") is answered


def test_a_mention_after_an_emoji_is_found_by_utf16_offsets() -> None:
    """An emoji before the mention takes two UTF-16 units; the entity's offset counts them."""
    text = "🚀🚀 @khronos_sandbox_bot oi"
    update = message(GROUP, text=text, entities=[{"type": "mention", "offset": 5, "length": 20}])
    assert deserves_answer(read_update(update, 0), ME, "addressed")


def test_group_policy_all_and_off() -> None:
    """groups = "all" answers every group message with content; "off" none."""
    chatter = read_update(message(GROUP, text="just chatting"), 0)
    service = read_update(message(GROUP, new_chat_members=[{"id": 1}]), 0)
    assert deserves_answer(chatter, ME, "all") and not deserves_answer(service, ME, "all")
    assert not deserves_answer(read_update(message(GROUP, text="/help"), 0), ME, "off")
