"""Grouping alerts and reading [alerts]: what the operator reads for each window of events, and
how a bad value is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from khronos_cli.alerts.grouping import Event, Grouper
from khronos_cli.config import load
from khronos_cli.errors import ConfigError
from tests.support import Clock


def grouper() -> tuple[Grouper, Clock]:
    clock = Clock()
    return Grouper(60.0, clock), clock


def test_nothing_is_told_before_the_window_ends_then_one_line_per_subject() -> None:
    """Events wait for their subject's window; when it ends each subject is one line, and a
    subject seen first later waits for its own window."""
    group, clock = grouper()
    group.add(Event("breaker:anthropic-api", "open", "5 of 5 calls failed", 10.0))
    clock.advance(30)
    group.add(Event("degraded:redis", "on", "redis unreachable", 40.0))
    assert group.due() == []
    clock.advance(30)
    assert [text for text, _ in group.due()] == [
        "breaker anthropic-api opened: 5 of 5 calls failed"
    ]
    clock.advance(30)
    assert [text for text, _ in group.due()] == ["degraded (redis) now: redis unreachable"]


def test_a_flapping_breaker_is_one_line_counting_its_openings() -> None:
    """Seven openings and closings in one window: one line with the count, the span, the state
    now and the last reason."""
    group, clock = grouper()
    for i in range(7):
        group.add(Event("breaker:openai-api", "open", f"timeout {i}", 100.0 + 10 * i))
        group.add(Event("breaker:openai-api", "close", "", 105.0 + 10 * i))
    group.add(Event("breaker:openai-api", "open", "timeout 7", 175.0))
    clock.advance(60)
    (text, events), *rest = group.due()
    assert rest == [] and len(events) == 15
    assert text == "breaker openai-api opened 8 times in 75 s, open now (last: timeout 7)"


def test_a_breaker_that_stays_open_through_failed_trials_is_told_once() -> None:
    """Open, then re-opened by failed half-open trials every 30 s for two windows: one line
    when it opened, nothing in the next window, and the close says how long it was open."""
    group, clock = grouper()
    group.add(Event("breaker:anthropic-api", "open", "timeouts", 0.0))
    group.add(Event("breaker:anthropic-api", "open", "half-open trial failed", 30.0))
    clock.advance(60)
    assert [text for text, _ in group.due()] == ["breaker anthropic-api opened: timeouts"]
    group.add(Event("breaker:anthropic-api", "open", "half-open trial failed", 60.0))
    group.add(Event("breaker:anthropic-api", "open", "half-open trial failed", 90.0))
    clock.advance(60)
    assert group.due() == []
    group.add(Event("breaker:anthropic-api", "close", "", 150.0))
    clock.advance(60)
    assert [text for text, _ in group.due()] == [
        "breaker anthropic-api closed again after 2 min (it began: timeouts)"
    ]


def test_a_close_in_a_later_window_says_how_long_and_why() -> None:
    """A breaker told open in one window and closed in the next: the close says how long it
    was open and why it opened; Telegram's own outage reads as Telegram was down."""
    group, clock = grouper()
    group.add(Event("breaker:database", "open", "disk I/O error", 1000.0))
    group.add(Event("telegram:sends", "on", "connection refused", 1000.0))
    clock.advance(60)
    group.due()
    group.add(Event("breaker:database", "close", "", 1240.0))
    group.add(Event("telegram:sends", "off", "", 1240.0))
    clock.advance(60)
    assert sorted(text for text, _ in group.due()) == [
        "Telegram was down for 4 min (connection refused); the alerts above waited for it",
        "breaker database closed again after 4 min (it began: disk I/O error)",
    ]


def test_one_off_alerts_group_by_kind_with_the_last_detail() -> None:
    """Three failed backups in a window: one line with the count and the last error."""
    group, clock = grouper()
    for at, error in ((0.0, "disk full"), (30.0, "disk full"), (50.0, "no space left")):
        group.add(Event("backup", "once", error, at))
    clock.advance(60)
    assert [text for text, _ in group.due()] == [
        "a backup failed (3 times in 50 s); last: no space left"
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[alerts]\nchat_ids = [0]\n", "alerts.chat_ids"),
        ('[alerts]\nchat_ids = ["@me"]\n', "alerts.chat_ids"),
        ('[alerts]\nwebhook_url = "ftp://x"\n', "alerts.webhook_url"),
        ('[alerts]\ngroup_window = "0s"\n', "alerts.group_window"),
        ("[alerts]\nbacklog = 0\n", "alerts.backlog"),
        ("[alerts]\nchats = [1]\n", "alerts.chats"),
    ],
)
def test_a_bad_alerts_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad [alerts] value is a ConfigError (exit 78) naming the file and the key."""
    path = tmp_path / "khronos.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path, env={}, state_dir=tmp_path)
    assert caught.value.key == key and str(path) in str(caught.value)


def test_the_webhook_url_is_a_secret_and_the_environment_names_the_chats(tmp_path: Path) -> None:
    """The webhook URL (it often holds a token) shows as "set" and joins the scrubbed secrets;
    KHRONOS_ALERTS_CHAT_IDS replaces the file's chats (the sandbox's operator chat)."""
    path = tmp_path / "khronos.toml"
    path.write_text('[alerts]\nchat_ids = [1]\nwebhook_url = "https://hooks.example/T0K3N"\n')
    settings = load(path, env={"KHRONOS_ALERTS_CHAT_IDS": "5, -6"}, state_dir=tmp_path)
    assert settings.alerts.chat_ids == (5, -6)
    assert settings.to_json()["alerts"]["webhook_url"] == "set"
    assert settings.alerts.webhook_url in settings.secrets
    with pytest.raises(ConfigError):
        load(path, env={"KHRONOS_ALERTS_CHAT_IDS": "me"}, state_dir=tmp_path)
