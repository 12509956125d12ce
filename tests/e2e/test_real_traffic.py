"""Real traffic through `khronos run --sandbox`: what Telegram and the LLMs really send.

Each test drives the real supervisor and worker against the stand-ins, which behave like the real
services (REFERENCE.md §7): long answers, group chatter, leftover webhooks, floods per chat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from khronos_cli.bot.messages import MAX_MESSAGE
from tests.e2e.conftest import FAST_CONFIG, Instance, alive
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


def test_a_4090_character_message_is_answered_in_full_in_two_parts(instance: Instance) -> None:
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
    assert ledger["answered"] == 1 and ledger["duplicates"] == [] and not ledger["unanswered"]
    assert instance.status()["messages_failed"] == 0


def test_a_flooded_group_halts_only_itself(make_instance: Any) -> None:
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
    assert len(deliveries_to(instance, group)) == 1  # the rest wait for the group's retry_after
    assert took < 15, took  # not held for the group's retry_after (up to 60 s)
    breakers = json.loads(instance.khronos("breakers", "--json").stdout)
    assert breakers["telegram-api"]["state"] == "closed"
    assert breakers["telegram-api"]["stats"]["failures"] == 0


def test_a_leftover_webhook_is_named_then_removed_at_start(make_instance: Any) -> None:
    """A webhook set on the token (another deployment's) makes getUpdates 409: status names it
    with what to do; the next start deletes it, keeping the pending updates, and answers."""
    instance: Instance = make_instance(external_sandbox=True).start()
    wait_for(lambda: instance.admin.get("/_sandbox/stats").json()["requests"].get("getupdates"))
    assert bot_api(instance, "setWebhook", url="https://old-deployment.example.com/hook")["ok"]
    instance.push(6101, "hello while a webhook is set")
    wait_for(lambda: "webhook" in (instance.status().get("poll_problem") or ""), timeout=30)
    shown = instance.khronos("status")
    assert "webhook" in shown.stdout and "409" in shown.stdout, shown.stdout
    assert "webhook" in instance.log()
    assert not deliveries_to(instance, 6101)
    stopped = instance.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    instance.wait()
    instance.start()
    wait_for(lambda: len(deliveries_to(instance, 6101)) == 1, timeout=30)
    assert bot_api(instance, "getWebhookInfo")["result"]["url"] == ""
    assert instance.status()["poll_problem"] is None


def test_a_bad_webhook_setting_is_refused_at_start_with_78(tmp_path: Any) -> None:
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


def test_a_long_reply_cut_by_kill_9_mid_send_arrives_once_and_in_order(
    make_instance: Any,
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
    assert len(parts) == 3, [len(p["text"]) for p in parts]
    assert " ".join(p["text"] for p in parts) == expected
    assert [p["reply_to_message_id"] is not None for p in parts] == [True, False, False]
    assert instance.status()["last_shutdown"]["result"] == "killed"
