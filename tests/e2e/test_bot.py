"""The bot end to end: `khronos run --sandbox` answering the stand-in Telegram's users."""

from __future__ import annotations

import json
import os
import signal

from khronos_cli.bot.bot import FALLBACK_TEXT
from khronos_cli.control.client import ControlClient
from tests.instance import FAST_CONFIG, Instance, alive
from tests.support import wait_for


def answered(instance: Instance, count: int) -> bool:
    ledger = instance.ledger()
    return ledger["sent"] == count and not ledger["unanswered"]


def test_every_message_is_answered_exactly_once_without_429s(instance: Instance) -> None:
    """30 messages from 6 chats (some voice) are each answered once; Telegram never said 429."""
    for i in range(30):
        chat = 2000 + i % 6
        if i % 5 == 0:
            instance.push(chat, voice=f"voice note {i}")
        else:
            instance.push(chat, f"message {i}")
    wait_for(lambda: answered(instance, 30), timeout=90)
    ledger = instance.ledger()
    assert ledger["duplicates"] == [] and ledger["fallbacks"] == [] and ledger["unmatched"] == 0
    stats = instance.admin.get("/_sandbox/stats").json()
    assert stats["flood_rejections"] == 0
    texts = [d["text"] for d in instance.deliveries()]
    assert all(t.startswith("anthropic echo: ") for t in texts)
    assert "anthropic echo: voice note 0" in texts


def test_anthropic_down_is_answered_by_openai(instance: Instance) -> None:
    """With Anthropic down, users get OpenAI's answers."""
    instance.llm_mode("anthropic", mode="down")
    for i in range(3):
        instance.push(3000 + i, f"hello {i}")
    wait_for(lambda: answered(instance, 3), timeout=60)
    assert sorted(d["text"] for d in instance.deliveries()) == [
        f"openai echo: hello {i}" for i in range(3)
    ]


def test_both_down_gives_the_fallback_text(instance: Instance) -> None:
    """With both LLMs hanging, users get the fallback text within the breakers' timeouts."""
    instance.llm_mode("anthropic", mode="hang")
    instance.llm_mode("openai", mode="hang")
    instance.push(3100, "anyone?")
    wait_for(lambda: answered(instance, 1), timeout=30)
    assert [d["text"] for d in instance.deliveries()] == [FALLBACK_TEXT]


def test_chat_fails_over_like_the_bot_and_503s_when_no_model_answers(instance: Instance) -> None:
    """POST /chat says who answered; with Anthropic's breaker forced open OpenAI answers (and the
    breaker counts a fallback); with both open the fallback text comes with a 503 and a
    Retry-After."""
    assert instance.public("POST", "/chat", json={"message": "hi"}).json() == {
        "reply": "anthropic echo: hi",
        "answered_by": "anthropic",
    }
    forced = instance.khronos("breakers", "open", "anthropic-api", "--for", "30s")
    assert forced.returncode == 0, forced.stderr
    assert instance.public("POST", "/chat", json={"message": "hi"}).json() == {
        "reply": "openai echo: hi",
        "answered_by": "openai",
    }
    assert instance.khronos("breakers", "open", "openai-api", "--for", "30s").returncode == 0
    answer = instance.public("POST", "/chat", json={"message": "hi"})
    assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1
    assert answer.json()["error"]["status"] == 503
    assert (answer.json()["reply"], answer.json()["answered_by"]) == (FALLBACK_TEXT, "fallback")
    breakers = json.loads(instance.khronos("breakers", "--json").stdout)
    assert breakers["anthropic-api"]["stats"]["fallbacks"] == 2
    assert breakers["openai-api"]["stats"]["fallbacks"] == 1
    table = instance.khronos("breakers").stdout
    row = next(line for line in table.splitlines() if "anthropic-api" in line)
    assert " 2 " in row  # the fb column
    bad = instance.public("POST", "/chat", content=b"{nope")
    assert bad.status_code == 400 and bad.json()["error"]["status"] == 400
    assert instance.public("GET", "/health").status_code == 200


def test_messages_429_when_that_chats_queue_is_full(make_instance: object) -> None:
    """POST /messages queues (202) until that chat's queue is full, then 429 with Retry-After."""
    config = FAST_CONFIG + '[limiters.telegram]\nmax_queued = 2\nrates = ["1/10s"]\n'
    instance = make_instance(config=config).start()  # type: ignore[operator]
    codes = [
        instance.public("POST", "/messages", json={"chat_id": 77, "text": f"bulk {i}"})
        for i in range(6)
    ]
    assert codes[0].status_code == 202
    refused = [c for c in codes if c.status_code == 429]
    assert refused, [c.status_code for c in codes]
    assert float(refused[0].headers["retry-after"]) >= 1
    other = instance.public("POST", "/messages", json={"chat_id": 78, "text": "other chat"})
    assert other.status_code == 202  # one full chat does not block another


def test_kill_9_with_20_updates_in_flight_loses_nothing(instance: Instance) -> None:
    """SIGKILL of the worker mid-answer: after the restart all 20 are answered exactly once."""
    instance.llm_mode("anthropic", mode="slow", delay=0.8)
    for i in range(20):
        instance.push(4000 + i, f"in flight {i}")
    wait_for(lambda: instance.status().get("updates_accepted") == 20, timeout=30)
    worker = instance.status()["pid"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not alive(worker), timeout=10)
    instance.llm_mode("anthropic", mode="ok")
    wait_for(lambda: instance.status().get("pid") not in (None, worker), timeout=60)
    wait_for(lambda: answered(instance, 20), timeout=90)
    ledger = instance.ledger()
    assert ledger["duplicates"] == [] and ledger["answered"] == 20
    assert instance.status()["last_shutdown"]["result"] == "killed"
    assert instance.supervisor()["restarts"] == 1


def test_webhook_mode_takes_updates_with_the_secret(make_instance: object) -> None:
    """In webhook mode the stand-in Telegram posts updates with the secret; each is answered."""
    from tests.support import free_port

    port = free_port()
    config = FAST_CONFIG + (
        f'[telegram]\nmode = "webhook"\nwebhook_url = "http://127.0.0.1:{port}/telegram/webhook"\n'
    )
    instance = make_instance(config=config, port=port)  # type: ignore[operator]
    os.environ["KHRONOS_WEBHOOK_SECRET"] = "sandbox-webhook-secret-0123456789"
    try:
        instance.start()
    finally:
        del os.environ["KHRONOS_WEBHOOK_SECRET"]
    assert instance.status()["mode"] == "webhook"
    for i in range(3):
        instance.push(5000 + i, f"hook {i}")
    wait_for(lambda: answered(instance, 3), timeout=60)
    assert instance.ledger()["duplicates"] == []
    stranger = instance.public("POST", "/telegram/webhook", json={"update_id": 1})
    assert stranger.status_code == 403


def test_a_second_run_on_the_same_state_dir_answers_its_users(make_instance: object) -> None:
    """`khronos run --sandbox` twice in a row on one state dir: the sandbox's update ids go on
    from the first run's, as Telegram's do, so the second run's users are answered too (the
    journal does not take their updates for ones it already answered)."""
    instance = make_instance().start()  # type: ignore[operator]
    for i in range(3):
        instance.push(9100 + i, f"first run {i}")
    wait_for(lambda: answered(instance, 3), timeout=30)
    first = max(m["update_id"] for m in instance.admin.get("/_sandbox/messages").json()["items"])
    assert instance.khronos("stop").returncode == 0
    instance.wait()
    instance.admin.close()  # the new sandbox listens on new ports
    instance._admin = None
    instance.start()
    for i in range(3):
        instance.push(9200 + i, f"second run {i}")
    wait_for(lambda: answered(instance, 3), timeout=30)
    items = instance.admin.get("/_sandbox/messages").json()["items"]
    assert min(m["update_id"] for m in items) > first
    assert instance.status()["updates_duplicate"] == 0


def test_breaker_transitions_and_halts_are_in_the_log(make_instance: object) -> None:
    """The log says when a breaker opens (with why), goes half-open, closes (after how long),
    is forced by the operator, and when a 429 halts a chat's sends: not only /events does."""
    instance = make_instance().start()  # type: ignore[operator]
    started = instance.khronos("outage", "start", "anthropic-api", "--mode", "down", "--for", "2s")
    assert started.returncode == 0, started.stderr
    for i in range(4):
        instance.push(9300 + i, f"during the outage {i}")
    wait_for(lambda: "breaker anthropic-api half-open" in instance.log(), timeout=30)
    instance.push(9310, "after the outage")  # the trial call
    wait_for(lambda: "breaker anthropic-api closed again after" in instance.log(), timeout=30)
    forced = instance.khronos("breakers", "open", "openai-api", "--for", "5s", "--reason", "drill")
    assert forced.returncode == 0, forced.stderr
    instance.admin.post(
        "/_sandbox/flood/force", json={"chat_id": 9400, "retry_after": 3, "seconds": 1}
    ).raise_for_status()
    instance.push(9400, "flooded")
    wait_for(lambda: "limiter telegram: key 9400 halted for 3.0s" in instance.log(), timeout=30)
    log = instance.log()
    assert "WARNING khronos.events: breaker anthropic-api opened: " in log
    assert "breaker openai-api forced open for 5.0s by the operator: drill" in log


def test_calls_to_no_chat_never_queue_in_the_send_limiter(make_instance: object) -> None:
    """getMe, deleteWebhook (and getFile, downloads, setWebhook) send nothing to a chat: they
    pass the telegram-api breaker but never the per-chat send limiter, where they queued behind
    each other at one chat's rate (polling started one period late: 10 s at 1/10s)."""
    config = FAST_CONFIG + '[limiters.telegram]\nrates = ["1/10s"]\n'
    instance: Instance = make_instance(config=config).start()  # type: ignore[operator]
    wait_for(lambda: instance.admin.get("/_sandbox/stats").json()["requests"].get("getupdates"))
    with ControlClient(instance.state_dir) as control:
        assert control.get("/limiters")["telegram"]["received"] == 0
        breaker = control.get("/breakers")["telegram-api"]["stats"]
    assert breaker["successes"] >= 2  # getMe and deleteWebhook, through the breaker
    instance.push(9900, "right after the start")
    wait_for(lambda: answered(instance, 1), timeout=30)
