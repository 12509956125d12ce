"""Configuration: the defaults, TOML overrides, environment, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from khronos_cli.config import (
    BREAKER_DEFAULTS,
    DEFAULT_HTTP_PORT,
    Rate,
    Secret,
    default_state_dir,
    load,
    parse_duration,
    parse_rate,
)
from khronos_cli.errors import ConfigError, ExitCode


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "khronos.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_seeds(tmp_path: Path) -> None:
    """With no file, the breakers and limiters carry DESIGN.md's defaults; the LLM timeouts fit
    a 1,024-token answer and getUpdates' breaker fits the 30 s long poll."""
    settings = load(env={}, state_dir=tmp_path)
    assert settings.config_path is None
    assert settings.http_host == "127.0.0.1" and settings.http_port == DEFAULT_HTTP_PORT
    b = settings.breakers
    assert (b["anthropic-api"].timeout, b["anthropic-api"].error_threshold) == (30.48, 50)
    assert (b["telegram-api"].timeout, b["telegram-api"].reset_timeout) == (5, 30)
    assert b["openai-api"].timeout == 30.48
    assert b["telegram-updates"].timeout == 40 and b["openai-transcription"].timeout == 120
    assert (b["database"].timeout, b["database"].error_threshold, b["database"].reset_timeout) == (
        5,
        30,
        15,
    )
    lim = settings.limiters
    assert (lim["global"].max_concurrent, lim["global"].min_time) == (100, 0.010)
    assert (lim["anthropic"].max_concurrent, lim["anthropic"].min_time) == (3, 0.5)
    assert (lim["anthropic"].max_queued, lim["anthropic"].group_by) == (50, "user")
    assert (lim["whisper"].max_concurrent, lim["whisper"].max_queued) == (2, 10)
    assert lim["telegram"].group_by == "chat" and lim["telegram"].max_concurrent == 1
    assert Rate(30, 1.0) in lim["telegram"].global_rates
    assert Rate(20, 60.0) in lim["telegram"].group_rates


def test_file_overrides_one_breaker_and_keeps_the_rest(tmp_path: Path) -> None:
    """A [breakers.NAME] table overrides only the keys it names; durations accept units."""
    path = write(
        tmp_path,
        '[breakers.anthropic-api]\ntimeout = "2.5s"\nvolume_threshold = 20\n'
        '[limiters.telegram]\nrates = ["2/s"]\nstrategy = "drop-oldest"\n'
        '[limiters.whisper]\nmax_concurrent = 4\nmin_time = "250ms"\n',
    )
    settings = load(path, env={}, state_dir=tmp_path)
    assert settings.config_path == path
    anthropic = settings.breakers["anthropic-api"]
    assert anthropic.timeout == 2.5 and anthropic.volume_threshold == 20
    assert anthropic.reset_timeout == BREAKER_DEFAULTS["anthropic-api"].reset_timeout
    assert settings.breakers["database"] == BREAKER_DEFAULTS["database"]
    assert settings.limiters["telegram"].rates == (Rate(2, 1.0),)
    assert settings.limiters["telegram"].strategy == "drop-oldest"
    assert settings.limiters["telegram"].max_concurrent == 1
    assert settings.limiters["whisper"].min_time == 0.25


def test_state_dir_file_is_found_without_config_flag(tmp_path: Path) -> None:
    """<state-dir>/khronos.toml is read when --config is not given."""
    write(tmp_path, "[http]\nport = 0\n")
    settings = load(env={}, state_dir=tmp_path)
    assert settings.http_port == 0 and settings.config_path == tmp_path / "khronos.toml"


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ('[breakers.anthropic-api]\ntimeout = "fast"\n', "breakers.anthropic-api.timeout", "fast"),
        ("[breakers.database]\nerror_threshold = 150\n", "breakers.database.error_threshold", 150),
        ("[breakers.database]\ntimeout = 0\n", "breakers.database.timeout", 0),
        (
            "[breakers.database]\nvolume_threshold = true\n",
            "breakers.database.volume_threshold",
            True,
        ),
        ("[breakers.database]\ntimout = 3\n", "breakers.database.timout", 3),
        ('[limiters.telegram]\nrates = ["fast"]\n', "limiters.telegram.rates", "fast"),
        ('[limiters.telegram]\nstrategy = "random"\n', "limiters.telegram.strategy", "random"),
        ("[limiters.global]\nmax_concurrent = -1\n", "limiters.global.max_concurrent", -1),
        ("[http]\nport = 70000\n", "http.port", 70000),
        ('redis_url = "http://x"\n', "redis_url", "http://x"),
        ('[anthropic]\nbase_url = "ftp://x"\n', "anthropic.base_url", "ftp://x"),
        ('[anthropic]\nfirst_byte_timeout = "2m"\n', "anthropic.first_byte_timeout", "2m"),
        ("[openai]\nstall_timeout = 0\n", "openai.stall_timeout", 0),
        ("unknown = 1\n", "unknown", 1),
        ("breakers = 3\n", "breakers", 3),
    ],
)
def test_bad_value_names_file_key_and_value(
    tmp_path: Path, text: str, key: str, value: object
) -> None:
    """Every bad value raises ConfigError naming the file, key, value and what was expected."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, env={}, state_dir=tmp_path)
    error = caught.value
    assert error.source == str(path) and error.key == key and error.value == value
    assert str(path) in str(error) and key in str(error) and "expected" in str(error)
    assert error.exit_code == ExitCode.CONFIG == 78


def test_stream_limits_default_and_per_provider(tmp_path: Path) -> None:
    """A streamed answer's first-byte (5 s) and stall (10 s) limits, set per provider in
    [anthropic] and [openai]."""
    bot = load(env={}, state_dir=tmp_path).bot
    assert (bot.anthropic_first_byte_timeout, bot.anthropic_stall_timeout) == (5.0, 10.0)
    assert (bot.openai_first_byte_timeout, bot.openai_stall_timeout) == (5.0, 10.0)
    text = '[anthropic]\nfirst_byte_timeout = "2s"\n[openai]\nstall_timeout = "500ms"\n'
    bot = load(write(tmp_path, text), env={}, state_dir=tmp_path).bot
    assert (bot.anthropic_first_byte_timeout, bot.anthropic_stall_timeout) == (2.0, 10.0)
    assert (bot.openai_first_byte_timeout, bot.openai_stall_timeout) == (5.0, 0.5)


def test_syntax_error_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    """Broken TOML and a missing --config file are refused the same way, with exit code 78."""
    with pytest.raises(ConfigError, match="valid TOML"):
        load(write(tmp_path, "[breakers\n"), env={}, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="an existing TOML file"):
        load(tmp_path / "nope.toml", env={}, state_dir=tmp_path)


def test_environment_supplies_secrets_redis_and_port(tmp_path: Path) -> None:
    """Tokens, REDIS_URL and KHRONOS_HTTP_PORT come from the environment; secrets never print."""
    env = {
        "TELEGRAM_BOT_TOKEN": "123:abc-secret",
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "KHRONOS_HTTP_PORT": "8080",
        "KHRONOS_ANTHROPIC_BASE_URL": "http://127.0.0.1:9/",
    }
    settings = load(env=env, state_dir=tmp_path)
    assert settings.telegram_token.reveal() == "123:abc-secret"
    assert settings.redis_url == "redis://127.0.0.1:1/0" and settings.http_port == 8080
    assert settings.anthropic_base_url == "http://127.0.0.1:9"
    assert "abc-secret" not in repr(settings) and "sk-ant" not in repr(settings)
    assert "sk-ant" not in str(settings.anthropic_api_key)
    assert not settings.openai_api_key and Secret("x") == Secret("x")
    with pytest.raises(ConfigError, match="KHRONOS_HTTP_PORT"):
        load(env={"KHRONOS_HTTP_PORT": "http"}, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="KHRONOS_OPENAI_BASE_URL"):
        load(env={"KHRONOS_OPENAI_BASE_URL": "ftp://x"}, state_dir=tmp_path)


def test_default_state_dir_order() -> None:
    """KHRONOS_STATE_DIR wins over XDG_STATE_HOME, which wins over ~/.local/state."""
    assert default_state_dir({"KHRONOS_STATE_DIR": "/a", "XDG_STATE_HOME": "/b"}) == Path("/a")
    assert default_state_dir({"XDG_STATE_HOME": "/b"}) == Path("/b/khronos")
    assert default_state_dir({}) == Path.home() / ".local/state/khronos"


def test_parse_duration_and_rate() -> None:
    """Durations and rates parse their documented forms and refuse anything else."""
    assert parse_duration("500ms") == 0.5 and parse_duration("2m") == 120 and parse_duration(3) == 3
    assert parse_rate("20/min") == Rate(20, 60.0) and parse_rate("100/10s") == Rate(100, 10.0)
    assert str(Rate(20, 60.0)) == "20/min" and str(Rate(1, 1.0)) == "1/s"
    for bad in ("-1s", "1 fortnight", "nan"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    for bad in ("0/s", "x/s", "5", "5/0s"):
        with pytest.raises(ConfigError):
            parse_rate(bad)


def test_webhook_mode_needs_a_url_and_a_strong_secret(tmp_path: Path) -> None:
    """Webhook mode is refused without a webhook URL or with a short secret; with both it loads."""
    path = write(tmp_path, '[telegram]\nmode = "webhook"\n')
    with pytest.raises(ConfigError, match="KHRONOS_WEBHOOK_SECRET"):
        load(path, env={}, state_dir=tmp_path)
    env = {"KHRONOS_WEBHOOK_SECRET": "x" * 20}
    with pytest.raises(ConfigError, match=r"telegram\.webhook_url"):
        load(path, env=env, state_dir=tmp_path)
    path.write_text('[telegram]\nmode = "webhook"\nwebhook_url = "https://bot.example/hook"\n')
    settings = load(path, env=env, state_dir=tmp_path)
    assert (
        settings.telegram_mode == "webhook" and settings.webhook_url == "https://bot.example/hook"
    )
    assert load(env={}, state_dir=tmp_path / "none").telegram_mode == "polling"


def test_every_field_the_file_can_set_declares_its_kind() -> None:
    """Each settings field khronos.toml can set carries its kind (duration, count, rates,
    percent, choice or text) on the field, so none can fall through to a wrong parser."""
    import dataclasses

    from khronos_cli import settings
    from khronos_cli.kinds import kind_of

    classes = (
        settings.BreakerSettings,
        settings.LimiterSettings,
        settings.ShutdownSettings,
        settings.SupervisorSettings,
        settings.BotSettings,
        settings.LogSettings,
        settings.RetentionSettings,
        settings.AlertSettings,
    )
    for cls in classes:
        for item in dataclasses.fields(cls):
            if item.name != "name":
                kind_of(cls, item.name)  # raises TypeError for a field without one


def test_the_redis_namespace_is_the_bots_and_the_environments(tmp_path: Path) -> None:
    """Keys live under khronos[:<redis_prefix>]:{<bot id>}: two bots (or two environments) on
    one Redis database never share one; a prefix that is not a plain word is refused."""
    token = {"TELEGRAM_BOT_TOKEN": "123456:ABCdef_ghi-JKL"}
    plain = load(None, token, state_dir=tmp_path)
    assert plain.bot_id == "123456" and plain.redis_namespace == "khronos:{123456}"
    other = load(None, {"TELEGRAM_BOT_TOKEN": "654321:ABCdef_ghi-JKL"}, state_dir=tmp_path)
    assert other.redis_namespace == "khronos:{654321}"
    staging = load(None, {**token, "KHRONOS_REDIS_PREFIX": "staging"}, state_dir=tmp_path)
    assert staging.redis_namespace == "khronos:staging:{123456}"
    with pytest.raises(ConfigError, match="KHRONOS_REDIS_PREFIX"):
        load(None, {**token, "KHRONOS_REDIS_PREFIX": "a b"}, state_dir=tmp_path)
