"""Secrets from files and systemd credentials, and the missing ones named, through `khronos`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.instance import Instance
from tests.support import wait_for

SECRET_NAMES = ("TELEGRAM_BOT_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"


def answered(instance: Instance, count: int) -> bool:
    ledger = instance.ledger()
    return ledger["sent"] == count and not ledger["unanswered"]


def khronos(state_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI with no secret in its environment but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SECRET_NAMES)}
    clean.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run(
        [sys.executable, "-m", "khronos_cli", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env, "NO_COLOR": "1"},
    )


class FromFiles(Instance):
    """An instance whose secrets reach the worker as files only: the token by
    TELEGRAM_BOT_TOKEN_FILE, OpenAI's key by OPENAI_API_KEY_FILE and Anthropic's as a systemd
    credential."""

    def _sandbox_env(self, log: Any) -> dict[str, str]:
        env = super()._sandbox_env(log)
        secrets = self.root / "secrets"
        credentials = self.root / "credentials"
        for directory in (secrets, credentials):
            directory.mkdir(mode=0o700, exist_ok=True)
        (secrets / "token").write_text(env.pop("TELEGRAM_BOT_TOKEN") + "\n")
        (secrets / "openai").write_text(env.pop("OPENAI_API_KEY"))
        (credentials / "ANTHROPIC_API_KEY").write_text(env.pop("ANTHROPIC_API_KEY") + "\n")
        return {
            **env,
            "TELEGRAM_BOT_TOKEN_FILE": str(secrets / "token"),
            "OPENAI_API_KEY_FILE": str(secrets / "openai"),
            "CREDENTIALS_DIRECTORY": str(credentials),
        }


def test_config_names_every_missing_credential(tmp_path: Path) -> None:
    """`khronos config` without secrets exits 78 naming the token and the LLM keys, and says
    "config ok" only under --sandbox."""
    state = tmp_path / "s"
    refused = khronos(state, "config")
    assert refused.returncode == 78, refused.stderr
    assert "config ok" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    for name in SECRET_NAMES:
        assert name in line, line
    sandbox = khronos(state, "config", "--sandbox")
    assert sandbox.returncode == 0 and "config ok" in sandbox.stderr, sandbox.stderr


def test_run_without_secrets_names_them_all(tmp_path: Path) -> None:
    """`khronos run` with no token and no key exits 78 with one line naming every missing one."""
    done = khronos(tmp_path / "s", "run", "--port", "0")
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(name in lines[0] for name in SECRET_NAMES), lines


def test_secret_files_and_credentials_are_read(tmp_path: Path) -> None:
    """`khronos config --json` sees secrets given as *_FILE paths (one trailing newline
    dropped) and as systemd credentials, and misses none."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "ANTHROPIC_API_KEY").write_text("sk-ant-from-credential\n")
    done = khronos(
        tmp_path / "s",
        "config",
        "--json",
        TELEGRAM_BOT_TOKEN_FILE=str(tmp_path / "token"),
        CREDENTIALS_DIRECTORY=str(credentials),
    )
    assert done.returncode == 0, done.stderr
    assert '"telegram_token":"set"' in done.stdout and '"anthropic_api_key":"set"' in done.stdout
    assert '"missing_credentials":[]' in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_a_secret_set_twice_or_unreadable_is_refused_naming_it(tmp_path: Path) -> None:
    """NAME and NAME_FILE both set, or a NAME_FILE that cannot be read: exit 78 naming the
    variable (and the path), never the secret's content."""
    (tmp_path / "token").write_text(TOKEN)
    both = khronos(
        tmp_path / "s",
        "run",
        "--port",
        "0",
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_BOT_TOKEN_FILE=str(tmp_path / "token"),
    )
    assert both.returncode == 78, both.stderr
    assert "TELEGRAM_BOT_TOKEN_FILE" in both.stderr and TOKEN not in both.stderr
    (tmp_path / "token").chmod(0o000)
    missing = tmp_path / "no-such-file"
    for path in (missing, tmp_path / "token"):
        if path.exists() and os.access(path, os.R_OK):  # root reads anything: skip that case
            continue
        done = khronos(tmp_path / "s", "run", "--port", "0", OPENAI_API_KEY_FILE=str(path))
        assert done.returncode == 78, done.stderr
        assert "OPENAI_API_KEY_FILE" in done.stderr and str(path) in done.stderr
        assert TOKEN not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_worker_runs_on_secrets_from_files(tmp_path: Path) -> None:
    """A worker given its token and keys only as files and credentials starts and answers."""
    running = FromFiles(tmp_path / "f", external_sandbox=True)
    try:
        running.start()
        running.push(4100, "hello from a file")
        wait_for(lambda: answered(running, 1), timeout=60)
        assert [d["text"] for d in running.deliveries()] == ["anthropic echo: hello from a file"]
    finally:
        running.close()
