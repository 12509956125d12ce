"""What the configuration file alone cannot tell, checked before the bot starts: credentials,
and whether the public port's address resolves and can be bound."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from khronos_cli.config import load
from khronos_cli.errors import ConfigError, ExitCode
from khronos_cli.preflight import check_http, require_credentials

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"


def test_credentials_and_the_public_address_are_checked_before_start(tmp_path: Path) -> None:
    """The worker needs a token and an LLM key; an http.host that does not resolve or is not
    this machine's, and a taken port, are ConfigErrors naming the key."""
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        require_credentials(load(env={}, state_dir=tmp_path))
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        require_credentials(load(env={"TELEGRAM_BOT_TOKEN": TOKEN}, state_dir=tmp_path))
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-x"}
    require_credentials(load(env=env, state_dir=tmp_path))
    for host in ("nonexistent.invalid", "192.0.2.1"):
        (tmp_path / "khronos.toml").write_text(f'[http]\nhost = "{host}"\nport = 0\n')
        with pytest.raises(ConfigError, match=r"http\.host") as caught:
            check_http(load(env={}, state_dir=tmp_path), env={})
        assert caught.value.exit_code == ExitCode.CONFIG
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        settings = load(env={"KHRONOS_HTTP_PORT": port}, state_dir=tmp_path / "other")
        with pytest.raises(ConfigError, match="KHRONOS_HTTP_PORT"):
            check_http(settings, env={"KHRONOS_HTTP_PORT": port})
    check_http(load(env={"KHRONOS_HTTP_PORT": "0"}, state_dir=tmp_path / "other"), env={})
