"""Real traffic through `khronos run --sandbox`: what Telegram and the LLMs really send.

Each scenario drives the real supervisor and worker against the stand-ins, which behave like the
real services (REFERENCE.md §7): long answers, group chatter and service messages, leftover
webhooks, floods per chat, migrated groups, refusals, big and silent voice notes, and the
sandbox's own traffic mix. Figures go to RELIABILITY.md's "Real traffic" section.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from khronos_cli.bot.messages import (
    CUT_NOTE,
    FALLBACK_TEXT,
    MAX_MESSAGE,
    VOICE_EMPTY_TEXT,
    VOICE_TOO_BIG_TEXT,
)
from khronos_cli.sandbox.replies import REFUSAL_TEXT
from tests.instance import FAST_CONFIG, Instance, alive
from tests.reliability.harness import size
from tests.support import wait_for

BOT = "@khronos_sandbox_bot"


def deliveries_to(instance: Instance, chat_id: int) -> list[dict[str, Any]]:
    return [d for d in instance.deliveries() if d["chat_id"] == chat_id]


def bot_api(instance: Instance, method: str, **params: Any) -> dict[str, Any]:
    """Call the stand-in's Bot API with the bot's own token (what another deployment would do)."""
    sandbox = instance.sandbox()
    token = sandbox["env"]["TELEGRAM_BOT_TOKEN"]
    url = f"{sandbox['telegram_base_url']}/bot{token}/{method}"
    body: dict[str, Any] = httpx.post(url, json=params, timeout=10).json()
    return body


def test_a_4090_character_message_is_answered_in_full_in_two_parts(
    instance: Instance, figures: Callable[..., None]
) -> None:
    """The echo of a 4,090-character message is over Telegram's 4,096: it arrives whole, in two
    ordered parts, the first replying to the user's message, once."""
    text = " ".join(f"palavra{i}" for i in range(600))[:4090].strip()
    message_id = instance.push(6001, text)
    wait_for(lambda: len(deliveries_to(instance, 6001)) == 2, timeout=30)
    first, second = deliveries_to(instance, 6001)
    assert first["reply_to_message_id"] == message_id and second["reply_to_message_id"] is None
    assert all(len(d["text"]) <= MAX_MESSAGE for d in (first, second))
    assert f"{first['text']} {second['text']}" == f"anthropic echo: {text}"
    ledger = instance.ledger()
    figures(
        "real traffic: a 4,090-character message",
        reply_code_points=len(first["text"]) + 1 + len(second["text"]),
        parts=[len(first["text"]), len(second["text"])],
        answered=ledger["answered"],
        duplicates=len(ledger["duplicates"]),
    )
    assert ledger["answered"] == 1 and ledger["duplicates"] == [] and not ledger["unanswered"]
    assert instance.status()["messages_failed"] == 0


def test_a_flooded_group_halts_only_itself(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """Telegram answers 429 on one group (its 20/min is spent): that group waits for its
    retry_after while 20 private chats keep being answered at their 1/s, and the telegram-api
    breaker stays closed."""
    instance: Instance = make_instance().start()
    # The stand-in's group limit drops to 1/min: the group's second answer meets a 429 with a
    # retry_after of up to a minute, which our own 20/min spacing cannot foresee.
    instance.admin.post("/_sandbox/flood", json={"per_group": "1/min"}).raise_for_status()
    group = -1_001_500_000_001
    for i in range(3):
        instance.push(group, f"{BOT} pergunta {i}")
    wait_for(
        lambda: instance.admin.get("/_sandbox/stats").json()["flood_rejections"] >= 1, timeout=30
    )
    started = time.monotonic()
    for chat in range(7001, 7021):
        instance.push(chat, f"private question from {chat}")
    wait_for(lambda: all(deliveries_to(instance, c) for c in range(7001, 7021)), timeout=20)
    took = time.monotonic() - started
    stats = instance.admin.get("/_sandbox/stats").json()
    figures(
        "real traffic: one group flooded (429), 20 private chats",
        group_answers_during=len(deliveries_to(instance, group)),
        private_answered=20,
        seconds_to_answer_20_private=round(took, 2),
        flood_rejections=stats["flood_rejections"],
    )
    assert len(deliveries_to(instance, group)) == 1  # the rest wait for the group's retry_after
    assert took < 15, took  # not held for the group's retry_after (up to 60 s)
    breakers = json.loads(instance.khronos("breakers", "--json").stdout)
    assert breakers["telegram-api"]["state"] == "closed"
    assert breakers["telegram-api"]["stats"]["failures"] == 0


def test_a_leftover_webhook_is_named_then_removed_at_start(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """A webhook set on the token (another deployment's) makes getUpdates 409: status names it
    with what to do; the next start deletes it, keeping the pending updates, and answers."""
    instance: Instance = make_instance(external_sandbox=True).start()
    wait_for(lambda: instance.admin.get("/_sandbox/stats").json()["requests"].get("getupdates"))
    assert bot_api(instance, "setWebhook", url="https://old-deployment.example.com/hook")["ok"]
    instance.push(6101, "hello while a webhook is set")
    wait_for(lambda: "webhook" in (instance.status().get("poll_problem") or ""), timeout=30)
    shown = " ".join(instance.khronos("status").stdout.split())
    assert "why polling: Telegram has a webhook set for this token, so getUpdates gets 409" in shown
    assert "webhook" in instance.log()
    assert not deliveries_to(instance, 6101)
    stopped = instance.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    instance.wait()
    instance.start()
    restarted = time.monotonic()
    wait_for(lambda: len(deliveries_to(instance, 6101)) == 1, timeout=30)
    figures(
        "real traffic: a leftover webhook",
        status_line=shown[shown.index("why polling") :][:100],
        seconds_from_start_to_answer=round(time.monotonic() - restarted, 2),
    )
    assert bot_api(instance, "getWebhookInfo")["result"]["url"] == ""
    assert instance.status()["poll_problem"] is None


def test_a_bad_webhook_setting_is_refused_at_start_with_78(
    tmp_path: Any, figures: Callable[..., None]
) -> None:
    """Webhook settings Telegram would refuse (http on a public host, port 8080, a secret with
    '!') stop `khronos run` at once with exit 78 and one line naming the key."""
    cases = {
        "telegram.webhook_url": (
            '"http://bot.example.com/hook"',
            "sandbox-webhook-secret-0123456789",
        ),
        "port": ('"https://bot.example.com:8080/hook"', "sandbox-webhook-secret-0123456789"),
        "KHRONOS_WEBHOOK_SECRET": ('"https://bot.example.com/hook"', "not a valid secret!!"),
    }
    for key, (url, secret) in cases.items():
        state = tmp_path / key.replace(".", "-")
        state.mkdir(mode=0o700)
        (state / "khronos.toml").write_text(f'[telegram]\nmode = "webhook"\nwebhook_url = {url}\n')
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "khronos_cli", "run", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "KHRONOS_WEBHOOK_SECRET": secret, "TELEGRAM_BOT_TOKEN": "1:x"},
        )
        assert done.returncode == 78, (key, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert ("webhook_url" if key == "port" else key) in lines[0], lines[0]
        assert secret not in done.stderr
        assert time.monotonic() - started < 10
        figures(f"real traffic: bad webhook setting {key}", exit=done.returncode, line=lines[0])


def test_a_long_reply_cut_by_kill_9_mid_send_arrives_once_and_in_order(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """A reply of over 10,000 characters goes out in parts at the chat's 1/s; SIGKILL of the
    worker after the first part: after the restart the other parts arrive, in order, none twice,
    none lost."""
    config = FAST_CONFIG + "[anthropic]\nmax_tokens = 4000\n"  # no cut at 1,024 tokens
    instance: Instance = make_instance(config=config).start()
    text = " ".join(f"w{i}" for i in range(3000))[:10_050].strip()
    chat = 6201
    instance.push(chat, text)
    # The first part is sent and marked; the next goes a second later (the chat's 1/s).
    wait_for(lambda: instance.status().get("messages_sent") == 1, timeout=30, interval=0.005)
    assert len(deliveries_to(instance, chat)) == 1
    worker = instance.status()["pid"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not alive(worker), timeout=10)
    wait_for(lambda: instance.status().get("pid") not in (None, worker), timeout=60)
    expected = f"anthropic echo: {text}"
    wait_for(
        lambda: len(" ".join(d["text"] for d in deliveries_to(instance, chat))) >= len(expected),
        timeout=60,
    )
    parts = deliveries_to(instance, chat)
    figures(
        "real traffic: a 10,000-character reply, SIGKILL between parts",
        reply_code_points=len(expected),
        parts=[len(p["text"]) for p in parts],
        sends=instance.admin.get("/_sandbox/stats").json()["requests"].get("sendmessage"),
    )
    assert len(parts) == 3, [len(p["text"]) for p in parts]
    assert " ".join(p["text"] for p in parts) == expected
    assert [p["reply_to_message_id"] is not None for p in parts] == [True, False, False]
    assert instance.status()["last_shutdown"]["result"] == "killed"


def post(instance: Instance, path: str, **body: Any) -> dict[str, Any]:
    answer = instance.admin.post(f"/_sandbox/{path}", json=body)
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def test_groups_get_answers_only_when_addressed(
    instance: Instance, figures: Callable[..., None]
) -> None:
    """In a group, joins, leaves, pins, title changes, the bot being added, chatter, an edit, a
    callback query and /help@OtherBot get nothing; /help@thisbot, a mention and a reply to the
    bot get one answer each. The ledger sees nothing unexpected."""
    group, owner = -4_001, 4_001
    post(instance, "service", chat_id=group, user_id=owner, kind="new_chat_members", bot=True)
    post(instance, "service", chat_id=group, user_id=owner, kind="new_chat_members", users=[4002])
    post(instance, "service", chat_id=group, user_id=4002, kind="left_chat_member", users=[4002])
    post(instance, "service", chat_id=group, user_id=owner, kind="new_chat_title", title="novo")
    chatter = post(instance, "messages", chat_id=group, user_id=owner, text="só conversa")
    post(
        instance,
        "service",
        chat_id=group,
        user_id=owner,
        kind="pinned_message",
        message_id=chatter["message_id"],
    )
    post(
        instance,
        "updates",
        kind="edited_message",
        chat_id=group,
        message_id=chatter["message_id"],
        text="só conversa (editada)",
    )
    post(
        instance,
        "updates",
        kind="callback_query",
        chat_id=group,
        user_id=owner,
        message_id=chatter["message_id"],
        data="x",
    )
    post(instance, "messages", chat_id=group, user_id=owner, text="/help@OtherBot")
    post(instance, "messages", chat_id=group, user_id=owner, text="/help@khronos_sandbox_bot")
    mention = post(instance, "messages", chat_id=group, user_id=owner, text=f"oi {BOT}, tudo?")
    wait_for(lambda: len(deliveries_to(instance, group)) == 2, timeout=30)
    bot_message = next(
        d
        for d in deliveries_to(instance, group)
        if d["reply_to_message_id"] == mention["message_id"]
    )
    post(
        instance,
        "messages",
        chat_id=group,
        user_id=owner,
        text="e agora?",
        reply_to=bot_message["message_id"],
    )
    wait_for(lambda: len(deliveries_to(instance, group)) == 3, timeout=30)
    stats = instance.admin.get("/_sandbox/stats").json()
    # 4 service messages, the chatter, the pin and /help@OtherBot (edits and callback queries
    # are not even created: the bot asks Telegram for messages only)
    wait_for(lambda: instance.status()["updates_skipped"] == 7, timeout=30)
    ledger = instance.ledger()
    figures(
        "real traffic: a group's service messages and chatter",
        pushed=ledger["sent"],
        deserving=ledger["expected"],
        answered=ledger["answered"],
        unexpected=len(ledger["unexpected"]),
        skipped=instance.status()["updates_skipped"],
    )
    assert ledger["unexpected"] == [] and ledger["exactly_once"], ledger
    assert stats["deliveries"] == 3
    texts = [d["text"] for d in deliveries_to(instance, group)]
    assert texts[2] == "anthropic echo: e agora?"


def test_a_migrated_group_is_answered_at_its_new_id_with_its_history(
    instance: Instance, figures: Callable[..., None]
) -> None:
    """A group upgraded to a supergroup while an answer is being written: the answer, refused at
    the old id (400 migrate_to_chat_id), is delivered at the new id, and the conversation history
    moves with it."""
    group, owner = -4_101, 4_101
    first = post(instance, "messages", chat_id=group, user_id=owner, text=f"{BOT} lembre: azul")
    wait_for(lambda: len(deliveries_to(instance, group)) == 1, timeout=30)
    instance.llm_mode("anthropic", mode="slow", delay=0.7)  # under FAST_CONFIG's 1 s timeout
    post(instance, "messages", chat_id=group, user_id=owner, text=f"{BOT} qual era a cor?")
    wait_for(lambda: instance.status()["jobs_active"] == 1, timeout=30)
    moved = post(instance, "migrate", chat_id=group, user_id=owner)["migrate_to_chat_id"]
    wait_for(lambda: len(deliveries_to(instance, moved)) == 1, timeout=30)
    instance.llm_mode("anthropic", mode="ok")
    assert deliveries_to(instance, moved)[0]["text"] == f"anthropic echo: {BOT} qual era a cor?"
    post(instance, "messages", chat_id=moved, user_id=owner, text=f"{BOT} e agora?")
    wait_for(lambda: len(deliveries_to(instance, moved)) == 2, timeout=30)
    ledger = instance.ledger()
    assert ledger["exactly_once"] and ledger["duplicates"] == [], ledger
    assert first["message_id"] not in ledger["unanswered"]
    db = sqlite3.connect(f"file:{instance.state_dir / 'khronos.db'}?mode=ro", uri=True)
    try:
        turns = db.execute("SELECT text FROM turns WHERE chat_id = ? ORDER BY id", (moved,))
        history = [row[0] for row in turns]
        left = db.execute("SELECT count(*) FROM turns WHERE chat_id = ?", (group,)).fetchone()
    finally:
        db.close()
    figures(
        "real traffic: a group upgraded to a supergroup mid-answer",
        answered_at_new_id=len(deliveries_to(instance, moved)),
        history_turns_moved=len(history),
        chats_migrated=instance.status()["chats_migrated"],
    )
    assert history[:2] == [f"{BOT} lembre: azul", f"anthropic echo: {BOT} lembre: azul"]
    assert len(history) == 6 and left == (0,)


def test_what_real_models_and_files_answer_gets_a_fitting_reply(
    instance: Instance, figures: Callable[..., None]
) -> None:
    """A voice note over 20 MB and a silent one get a reason, not "try again"; Anthropic's
    refusal and empty answer are asked of OpenAI (whose refusal text is shown); several content
    blocks are joined; an answer cut at max_tokens is split and marked cut; a user who blocked
    the bot costs one refused send, never retried."""
    instance.push(6301, voice="uma nota longa demais")
    post(instance, "messages", chat_id=6302, voice="uma nota longa", file_size=25_000_000)
    instance.push(6303, voice="")
    instance.push(6304, "recuse isto #refuse")
    instance.push(6305, "nada a dizer #empty")
    instance.push(6306, "em blocos #blocks")
    instance.push(6307, "escreva muito #long")
    post(instance, "block", user_id=6308, blocked=True)
    instance.push(6308, "you will never read this")
    chats = range(6301, 6308)
    wait_for(lambda: all(deliveries_to(instance, c) for c in chats), timeout=60)
    wait_for(lambda: instance.status()["messages_failed"] == 1, timeout=30)
    text = {c: " ".join(d["text"] for d in deliveries_to(instance, c)) for c in chats}
    assert text[6301] == "anthropic echo: uma nota longa demais"
    assert text[6302] == VOICE_TOO_BIG_TEXT and text[6303] == VOICE_EMPTY_TEXT
    assert text[6304] == REFUSAL_TEXT  # OpenAI's refusal, after Anthropic's
    assert text[6305] == FALLBACK_TEXT  # both said nothing
    assert text[6306] == "anthropic echo: em blocos #blocks"

    def cut_reply_delivered() -> bool:  # its parts go out one per second (Telegram's chat rate)
        parts = deliveries_to(instance, 6307)
        return bool(parts) and parts[-1]["text"].endswith(CUT_NOTE.strip())

    wait_for(cut_reply_delivered, timeout=30)
    parts = deliveries_to(instance, 6307)
    assert len(parts) >= 2 and parts[-1]["text"].endswith(CUT_NOTE.strip())
    assert all(len(p["text"]) <= MAX_MESSAGE for p in parts)
    openai = httpx.get(f"{instance.sandbox()['openai_base_url']}/_sandbox/stats", timeout=10)
    assert openai.json()["requests"]["chat.completions"] == 2  # refused and empty only
    ledger = instance.ledger()
    figures(
        "real traffic: voice limits, refusals, empty, blocks, cut, blocked user",
        replies={c: t[:60] for c, t in text.items()},
        long_parts=[len(p["text"]) for p in parts],
        openai_calls=openai.json()["requests"]["chat.completions"],
        undeliverable=len(ledger["undeliverable"]),
    )
    assert len(ledger["undeliverable"]) == 1
    assert ledger["duplicates"] == [] and ledger["unexpected"] == []
    assert instance.status()["messages_failed"] == 1


def test_typing_shows_while_a_slow_model_writes(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """An answer that takes 6 s (its 4 tokens streamed 1.5 s apart) shows "typing…" twice (after
    1 s, then every 4.5 s), outside the chat's message budget: no 429, and the answer still
    comes once."""
    instance: Instance = make_instance(config="").start()
    instance.llm_mode("anthropic", token_latency=1.5)
    instance.push(6401, "pense devagar")
    wait_for(lambda: deliveries_to(instance, 6401), timeout=30)
    stats = instance.admin.get("/_sandbox/stats").json()
    figures("real traffic: typing during a 6 s answer", chat_actions=stats["chat_actions"])
    assert stats["chat_actions"] >= 2 and stats["flood_rejections"] == 0
    assert instance.ledger()["exactly_once"]


def test_a_long_answer_fits_the_llm_timeout(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """A 1,024-token answer written at 60 tokens/s takes ~17 s, longer than the old fixed 15 s:
    with the timeout that fits max_tokens it is Anthropic's answer, and no breaker failure."""
    instance: Instance = make_instance(config="").start()
    instance.llm_mode("anthropic", token_latency=1 / 60)
    started = time.monotonic()
    instance.push(6501, "conte tudo #long")
    wait_for(lambda: deliveries_to(instance, 6501), timeout=60)
    figures(
        "real traffic: a 1,024-token answer at 60 tokens/s",
        seconds_to_answer=round(time.monotonic() - started, 2),
        breaker_timeout_s=json.loads(instance.khronos("config", "--json").stdout)["breakers"][
            "anthropic-api"
        ]["timeout"],
    )
    first = deliveries_to(instance, 6501)[0]["text"]
    assert first.startswith("anthropic echo: conte tudo #long")
    breakers = json.loads(instance.khronos("breakers", "--json").stdout)
    assert breakers["anthropic-api"]["stats"]["failures"] == 0
    assert breakers["openai-api"]["stats"]["successes"] == 0


def test_voice_notes_have_a_breaker_of_their_own(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """Transcriptions failing open openai-transcription, not openai-api: with Anthropic down
    afterwards, text is still answered by OpenAI."""
    config = FAST_CONFIG + "[breakers.openai-transcription]\nvolume_threshold = 3\n"
    instance: Instance = make_instance(config=config).start()
    instance.llm_mode("openai", mode="errors", status=503)
    for i in range(4):
        instance.push(6601 + i, voice=f"nota {i}")
    wait_for(lambda: all(deliveries_to(instance, 6601 + i) for i in range(4)), timeout=60)
    breakers = json.loads(instance.khronos("breakers", "--json").stdout)
    figures(
        "real traffic: transcriptions failing",
        transcription=breakers["openai-transcription"]["state"],
        transcription_failures=breakers["openai-transcription"]["stats"]["failures"],
        openai_api=breakers["openai-api"]["state"],
    )
    assert breakers["openai-transcription"]["state"] == "open"
    assert breakers["openai-api"]["state"] == "closed"
    assert breakers["openai-api"]["stats"]["failures"] == 0
    instance.llm_mode("openai", mode="ok")
    instance.llm_mode("anthropic", mode="down")
    instance.push(6701, "e o texto?")
    wait_for(lambda: deliveries_to(instance, 6701), timeout=30)
    assert deliveries_to(instance, 6701)[0]["text"] == "openai echo: e o texto?"


def test_retention_prunes_the_database_on_a_schedule(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """With short retention ages, the worker's own schedule empties the journal, the outbox and
    the history of 60 answered messages: the database does not keep what it no longer needs."""
    config = FAST_CONFIG + (
        '[retention]\njournal = "1s"\noutbox = "1s"\nhistory = "1s"\ninterval = "0.5s"\n'
    )
    instance: Instance = make_instance(config=config).start()
    for i in range(60):
        instance.push(6800 + i % 10, f"mensagem {i}")
    wait_for(lambda: instance.ledger()["answered"] == 60, timeout=60)
    path = instance.state_dir / "khronos.db"

    def rows() -> tuple[int, ...]:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return tuple(
                db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("updates", "outbox", "turns")
            )
        finally:
            db.close()

    before = rows()
    started = time.monotonic()
    wait_for(lambda: rows() == (0, 0, 0), timeout=30)
    figures(
        "real traffic: retention",
        rows_after_answering=before,
        seconds_to_empty=round(time.monotonic() - started, 2),
    )
    assert "retention: pruned" in instance.log()


@pytest.mark.timeout(size(120, 900))
def test_the_sandbox_traffic_mix_is_answered_exactly_once(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """`python -m khronos_cli.sandbox`'s default traffic (long messages, directives, stickers, a
    blocked user, big and silent voice notes, two groups with commands, mentions, replies,
    chatter, service messages, an edit, a callback query, a migration): 40 messages in 10 s
    (1,200 in 10 minutes in the full run): every message that deserves an answer gets exactly
    one, nothing else does."""
    duration, rate = size(10, 600), size(4, 2)
    instance: Instance = make_instance(
        config="",
        external_sandbox=True,
        sandbox_args=("--rate", str(rate), "--duration", str(duration), "--quiet"),
    ).start()
    started = time.monotonic()

    def settled() -> bool:  # the users stopped pushing, and every message is answered
        return time.monotonic() - started > duration and not instance.ledger()["unanswered"]

    wait_for(settled, timeout=duration + 120, interval=1.0)
    ledger = instance.ledger()
    status = instance.status()
    figures(
        "real traffic: the sandbox traffic mix",
        seconds=duration,
        pushed=ledger["sent"],
        deserving=ledger["expected"],
        answered=ledger["answered"],
        unanswered=len(ledger["unanswered"]),
        duplicates=len(ledger["duplicates"]),
        unexpected=len(ledger["unexpected"]),
        undeliverable=len(ledger["undeliverable"]),
        fallbacks=len(ledger["fallbacks"]),
        multi_part_answers=len(ledger["parts"]),
        kinds=ledger["kinds"],
        latency=ledger["latency"],
        skipped=status["updates_skipped"],
        migrated=status["chats_migrated"],
        answered_by=status["answered"],
    )
    assert ledger["exactly_once"], ledger
