"""Where a secret comes from: the environment, a file named by ``<NAME>_FILE``, or a systemd
credential (``$CREDENTIALS_DIRECTORY/<NAME>``, from ``LoadCredential=`` or ``SetCredential=``).

Each secret has one source. ``NAME`` and ``NAME_FILE`` both set is refused (which one would an
operator expect to win?); a credential is read only when neither is set. A file's content loses
one trailing newline (``echo token > file`` writes one) and nothing else: a token with spaces
around it is still refused by its shape check, naming where it came from. An unreadable, empty
or oversized file is refused naming its path, never its content.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from khronos_cli.errors import ConfigError
from khronos_cli.redaction import Secret

__all__ = [
    "CREDENTIALS_DIRECTORY",
    "SECRETS",
    "FoundSecret",
    "api_key",
    "bot_token",
    "http_token",
    "read_secret",
]

SECRETS = (
    "TELEGRAM_BOT_TOKEN",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "KHRONOS_WEBHOOK_SECRET",
    "KHRONOS_HTTP_TOKEN",
)
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"  # set by systemd for a unit with credentials
MAX_SECRET_BYTES = 64 * 1024  # a token or a key is well under 1 KiB
MIN_HTTP_TOKEN = 16
_BOT_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")  # what @BotFather issues: <bot id>:<secret>
_API_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: what fits a header
_AROUND = " (it has spaces or a line break around it)"


@dataclass(frozen=True)
class FoundSecret:
    """A secret's value (empty when it is set nowhere) and where it came from, for errors:
    ``TELEGRAM_BOT_TOKEN``, ``TELEGRAM_BOT_TOKEN_FILE`` or ``$CREDENTIALS_DIRECTORY/...``."""

    value: str
    source: str


def read_secret(env: Mapping[str, str], name: str) -> FoundSecret:
    """``name`` from the environment, ``<name>_FILE`` or the systemd credentials directory."""
    value = env.get(name, "")
    file_variable = f"{name}_FILE"
    path = env.get(file_variable, "")
    if value and path:
        raise ConfigError(
            "environment",
            f"{name} and {file_variable}",
            None,
            f"one of the two: {name} holds the secret, {file_variable} the path of a file "
            "holding it",
            hidden=True,
        )
    if value:
        return FoundSecret(value, name)
    if path:
        return FoundSecret(_read(Path(path), file_variable), file_variable)
    directory = env.get(CREDENTIALS_DIRECTORY, "")
    if directory:
        credential = Path(directory) / name
        if credential.exists():
            source = f"${CREDENTIALS_DIRECTORY}/{name}"
            return FoundSecret(_read(credential, source), source)
    return FoundSecret("", name)


def bot_token(env: Mapping[str, str]) -> Secret:
    """``TELEGRAM_BOT_TOKEN``: empty (``--sandbox`` brings its own; ``preflight`` refuses it
    elsewhere) or ``<bot id>:<secret>`` as @BotFather issues it. Never echoed."""
    expected = "a bot token as @BotFather gives it: digits, ':', then A-Z a-z 0-9 _ -"
    return _shaped(env, "TELEGRAM_BOT_TOKEN", _BOT_TOKEN, expected)


def api_key(env: Mapping[str, str], variable: str) -> Secret:
    """An API key: printable characters without spaces (it travels in an HTTP header)."""
    return _shaped(env, variable, _API_KEY, "an API key of printable characters without spaces")


def _shaped(env: Mapping[str, str], variable: str, shape: re.Pattern[str], expected: str) -> Secret:
    """The secret ``variable`` (empty when unset), refused unless it has ``shape``: the error
    names where it came from, never the value."""
    found = read_secret(env, variable)
    value = found.value
    if value and not shape.fullmatch(value):
        hint = _AROUND if value.strip() != value else ""
        raise ConfigError("environment", found.source, None, expected + hint, hidden=True)
    return Secret(value)


def http_token(env: Mapping[str, str]) -> Secret:
    """``KHRONOS_HTTP_TOKEN``: the bearer token the public port's write endpoints require;
    long enough not to be guessed."""
    token = api_key(env, "KHRONOS_HTTP_TOKEN")
    if token and len(token.reveal()) < MIN_HTTP_TOKEN:
        source = read_secret(env, "KHRONOS_HTTP_TOKEN").source
        expected = f"a token of at least {MIN_HTTP_TOKEN} characters (`openssl rand -hex 32`)"
        raise ConfigError("environment", source, None, expected, hidden=True)
    return token


def _read(path: Path, key: str) -> str:
    """The file's text without one trailing newline; every failure names the path only."""
    shown = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with open(fd, "rb") as file:
            raw = file.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError("environment", key, shown, f"a readable file ({reason})") from None
    if len(raw) > MAX_SECRET_BYTES:
        expected = f"a file holding one secret (at most {MAX_SECRET_BYTES // 1024} KiB)"
        raise ConfigError("environment", key, shown, expected)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("environment", key, shown, "a UTF-8 text file") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError("environment", key, shown, "a file holding the secret (it is empty)")
    return text
