"""Configuration that cannot work is refused at load: unknown names, values out of range, values
that contradict each other, unreadable files, malformed secrets — each one ConfigError on one
line naming the key, and never the value of a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from khronos_cli.config import BREAKER_DEFAULTS, LIMITER_DEFAULTS, load
from khronos_cli.errors import ConfigError, ExitCode

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"


def refused(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> ConfigError:
    path = tmp_path / "khronos.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path, env=env or {}, state_dir=tmp_path)
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG and "\n" not in message, message
    assert "Traceback" not in message and len(message) < 400, message
    return caught.value


def test_unknown_breaker_and_limiter_names_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    """A typo in a breaker or limiter name is refused, listing every known name; it would
    otherwise configure a breaker or limiter nothing uses."""
    error = refused(tmp_path, '[breakers.anthropic_api]\ntimeout = "2s"\n')
    assert error.key == "breakers.anthropic_api"
    assert all(name in str(error) for name in BREAKER_DEFAULTS)
    error = refused(tmp_path, '[limiters.telegam]\nrates = ["1/s"]\n')
    assert error.key == "limiters.telegam"
    assert all(name in str(error) for name in LIMITER_DEFAULTS)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[breakers.database]\nbuckets = 100000000\n", "breakers.database.buckets"),
        ("[supervisor]\nrestart_delay = 1e308\n", "supervisor.restart_delay"),
        ("[supervisor]\nrestart_delay = inf\n", "supervisor.restart_delay"),
        ('[breakers.database]\ntimeout = "100000h"\n', "breakers.database.timeout"),
        ("[breakers.database]\nreset_timeout = nan\n", "breakers.database.reset_timeout"),
        (
            "[breakers.database]\nvolume_threshold = 10000000000\n",
            "breakers.database.volume_threshold",
        ),
        (
            "[breakers.database]\nhalf_open_max_wait = 1e300\n",
            "breakers.database.half_open_max_wait",
        ),
        ("[limiters.global]\nmax_concurrent = 10000000\n", "limiters.global.max_concurrent"),
        ("[limiters.anthropic]\nmax_queued = 1000000000\n", "limiters.anthropic.max_queued"),
        ('[limiters.telegram]\nrates = ["1000000000/s"]\n', "limiters.telegram.rates"),
        ('[limiters.telegram]\nrates = ["1/1000h"]\n', "limiters.telegram.rates"),
        ("[limiters.global]\nmin_time = 99999999\n", "limiters.global.min_time"),
        ("[anthropic]\nmax_tokens = 100000000\n", "anthropic.max_tokens"),
        ("[bot]\nhistory_turns = 10000000\n", "bot.history_turns"),
        ("[retention]\njournal = 1e18\n", "retention.journal"),
        ("[shutdown]\ndeadline = 1e9\n", "shutdown.deadline"),
        ("[supervisor]\ncrashloop_after = 100000\n", "supervisor.crashloop_after"),
        (
            '[supervisor]\nrestart_delay = "10s"\nmax_restart_delay = "5s"\n',
            "supervisor.max_restart_delay",
        ),
        ('[shutdown]\njobs_timeout = "40s"\n', "shutdown.jobs_timeout"),
        ('[shutdown]\ndeadline = "50s"\n', "supervisor.kill_after"),
        ('redis_url = "redis://127.0.0.1:notaport/0"\n', "redis_url"),
        ('[openai]\nbase_url = "http://exa mple.com"\n', "openai.base_url"),
    ],
)
def test_values_that_cannot_work_are_refused_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """Every number has a sane range (durations finite and capped, counts capped, rates
    bounded) and related values agree; anything else is refused naming the key."""
    assert refused(tmp_path, text).key == key


def test_kill_after_leaves_room_for_the_closing_steps_grace(tmp_path: Path) -> None:
    """The supervisor's kill_after must exceed the deadline plus quick_budget: the closing
    steps may run that long after the deadline."""
    refusal = refused(tmp_path, '[shutdown]\ndeadline = "39s"\n')  # 39 + 2 > kill_after 40
    assert refusal.key == "supervisor.kill_after" and "quick_budget (41s" in str(refusal)


def test_files_that_cannot_be_read_are_one_line_each(tmp_path: Path) -> None:
    """A non-UTF-8 file, TOML nested 5,000 deep, an integer of 5,000 digits and a file of
    megabytes are each one ConfigError, never a traceback."""
    assert refused(tmp_path, b'[http]\nhost = "\xff\xfe"\n').key == "(encoding)"
    assert refused(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n").key == "(syntax)"
    assert refused(tmp_path, "a = " + "{b = " * 5000 + "}" * 5000 + "\n").key == "(syntax)"
    assert refused(tmp_path, "x = " + "9" * 5000 + "\n").key == "(syntax)"
    assert refused(tmp_path, "# " + "x" * 2_000_000 + "\n").key == "(file)"


def test_a_malformed_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A token that is not <digits>:<characters> (a trailing newline from `$(cat file)`, no
    colon) and an API key with a line break are refused naming the variable, never the value."""
    for token in (TOKEN + "\n", " " + TOKEN, TOKEN.replace(":", ""), "abc:" + TOKEN[10:]):
        error = refused(tmp_path, "", {"TELEGRAM_BOT_TOKEN": token})
        assert error.key == "TELEGRAM_BOT_TOKEN" and error.value is None
        assert TOKEN[10:] not in str(error) and token.strip() not in str(error)
    error = refused(tmp_path, "", {"ANTHROPIC_API_KEY": "sk-ant-secret-key-1234\n"})
    assert error.key == "ANTHROPIC_API_KEY" and "secret-key" not in str(error)
    settings = load(env={"TELEGRAM_BOT_TOKEN": TOKEN}, state_dir=tmp_path)
    assert settings.telegram_token.reveal() == TOKEN


def test_no_config_error_echoes_a_secret(tmp_path: Path) -> None:
    """A token put in the config file (under a key khronos does not know, or as a URL) and a
    Redis password are never in the error that refuses them."""
    for text in (
        f'[telegram]\ntoken = "{TOKEN}"\n',
        f'telegram_bot_token = "{TOKEN}"\n',
        f'[telegram]\nbase_url = "{TOKEN}"\n',
        f'[anthropic]\nbase_url = "ftp://api.example.com/bot{TOKEN}/"\n',
        'redis_url = "redis://:hunter2-password@127.0.0.1:notaport/0"\n',
        'redis_url = "http://user:hunter2-password@127.0.0.1/0"\n',
    ):
        message = str(refused(tmp_path, text))
        assert TOKEN.split(":")[1] not in message and "hunter2" not in message, message
    redis_url = "redis://:hunter2-password@127.0.0.1:6379/0"
    settings = load(env={"REDIS_URL": redis_url}, state_dir=tmp_path / "other")
    assert "hunter2" not in str(settings.to_json())


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis+sentinel://:hunter2-pw@127.0.0.1:26379", "/<master name>"),
        ("redis+sentinel://127.0.0.1:26379,127.0.0.1:x/main", "valid ports"),
        ("redis+cluster://:hunter2-pw@127.0.0.1:7000/3", "no database"),
        ("redis://127.0.0.1:6379/0?ssl_ca_certs=/etc/hosts", "rediss scheme only"),
        ("rediss://127.0.0.1:6380/0?ssl_ca_certs=/nonexistent/ca.pem", "readable file"),
        ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=maybe", "ssl_cert_reqs one of"),
        ("redis://127.0.0.1:6379/0?socket_timeout=9", "no query option 'socket_timeout'"),
        ("redis+gossip://127.0.0.1:6379", "a scheme among"),
    ],
)
def test_a_redis_url_for_no_topology_is_refused(tmp_path: Path, url: str, said: str) -> None:
    """Sentinel and Cluster URLs are checked at start: what is wrong is said, on one line,
    naming the key, never the password."""
    message = str(refused(tmp_path, f'redis_url = "{url}"\n'))
    assert message.startswith(f"config {tmp_path / 'khronos.toml'}: redis_url") and said in message
    assert "hunter2" not in message


def test_every_topology_has_a_url(tmp_path: Path) -> None:
    """One server, TLS with its options, Sentinel with a master and db, Cluster: all accepted."""
    for url in (
        "redis://user:pw@127.0.0.1:6379/2",
        "rediss://127.0.0.1:6380/0?ssl_ca_certs=/etc/hosts&ssl_cert_reqs=required",
        "unix:///run/redis.sock?db=1",
        "redis+sentinel://u:pw@10.0.0.1:26379,10.0.0.2:26379,[::1]:26379/main/1",
        "rediss+cluster://10.0.0.1:7000,10.0.0.2:7000?ssl_check_hostname=false",
    ):
        assert load(env={"REDIS_URL": url}, state_dir=tmp_path).redis_url == url
