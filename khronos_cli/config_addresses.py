"""The addresses in a configuration: API base URLs, the webhook and its secret, Redis, ports.

Each is checked as the other side will check it (Telegram's webhook rules, redis-py's URL
schemes), so that what cannot work is refused at start with one line naming the key.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

from khronos_cli import redis_address
from khronos_cli.config_values import choice
from khronos_cli.errors import ConfigError
from khronos_cli.kinds import Choice
from khronos_cli.secrets import read_secret

__all__ = [
    "TELEGRAM_MODES",
    "WEBHOOK_PORTS",
    "base_url",
    "clean_url",
    "mode",
    "port",
    "probe_port",
    "redis_prefix",
    "redis_url",
    "webhook_url",
]

TELEGRAM_MODES = Choice(("polling", "webhook"))
WEBHOOK_PORTS = (80, 88, 443, 8443)  # the only ports Telegram's cloud posts webhooks to
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")  # Telegram: 1-256 of these; ours: 16+
_REDIS_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$")


def _fail(source: str, key: str, value: object, expected: str) -> ConfigError:
    return ConfigError(source, key, value, expected)


def base_url(source: str, key: str, value: str) -> str:
    """An API's base URL: http(s), a valid host and port; without its trailing slash."""
    if not value.startswith(("http://", "https://")) or not clean_url(value):
        raise _fail(source, key, value, "an http:// or https:// URL with a valid host and port")
    return value.rstrip("/")


def mode(
    source: str, telegram: Mapping[str, Any], env: Mapping[str, str]
) -> Literal["polling", "webhook"]:
    mode = telegram.get("mode", "polling")
    if choice(source, "telegram.mode", TELEGRAM_MODES, mode) == "polling":
        return "polling"
    if not _WEBHOOK_SECRET.fullmatch(read_secret(env, "KHRONOS_WEBHOOK_SECRET").value):
        raise ConfigError(
            "environment",
            "KHRONOS_WEBHOOK_SECRET",
            None,
            "16 to 256 characters of A-Z, a-z, 0-9, _ and - in webhook mode "
            "(Telegram refuses any other secret_token)",
            hidden=True,
        )
    return "webhook"


def webhook_url(source: str, telegram: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """The URL Telegram posts to, checked as Telegram checks it: https on port 80, 88, 443
    or 8443. A loopback host may use http and any port, as a local Bot API server
    (``telegram-bot-api --local``) allows."""
    mode = telegram.get("mode", "polling")
    key = "KHRONOS_WEBHOOK_URL" if env.get("KHRONOS_WEBHOOK_URL") else "telegram.webhook_url"
    value = env.get("KHRONOS_WEBHOOK_URL") or telegram.get("webhook_url")
    if value is None:
        if mode == "webhook":
            raise _fail(source, "telegram.webhook_url", None, "the public URL Telegram posts to")
        return None
    expected = f"an https:// URL on port {', '.join(map(str, WEBHOOK_PORTS))}"
    if not isinstance(value, str):
        raise _fail(source, key, value, expected)
    try:
        url = urllib.parse.urlsplit(value)
        port = url.port
    except ValueError:
        raise _fail(source, key, value, expected) from None
    host = url.hostname or ""
    if _LOOPBACK.match(host if ":" not in host else f"[{host}]"):
        if url.scheme in ("http", "https"):
            return value
        raise _fail(source, key, value, "an http:// or https:// URL")
    if url.scheme != "https" or not host:
        raise _fail(source, key, value, expected)
    if (port or 443) not in WEBHOOK_PORTS:
        raise _fail(source, key, value, expected + " (Telegram posts to no other port)")
    return value


def redis_url(source: str, data: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """``REDIS_URL`` (which wins) or ``redis_url``: one server, a Sentinel-watched master or a
    Cluster (:mod:`khronos_cli.redis_address`); a password in it is never echoed."""
    key = "REDIS_URL" if env.get("REDIS_URL") else "redis_url"
    value = env.get("REDIS_URL") or data.get("redis_url")
    if value is None:
        return None
    expected = (
        "a redis://, rediss://, unix://, redis+sentinel://host:port[,...]/<master> or "
        "redis+cluster://host:port[,...] URL"
    )
    if not isinstance(value, str):
        raise _fail(source, key, value, expected)
    try:
        redis_address.parse(value)
    except ValueError as exc:
        raise _fail(source, key, value, f"{expected}: {exc}") from None
    return value


def probe_port(source: str, http: Mapping[str, Any], env: Mapping[str, str]) -> int | None:
    """``[http] probe_port`` (or ``KHRONOS_HTTP_PROBE_PORT``): a port of its own for
    ``/health``, ``/ready`` and ``/metrics``; none by default."""
    key = "KHRONOS_HTTP_PROBE_PORT" if env.get("KHRONOS_HTTP_PROBE_PORT") else "http.probe_port"
    value = env.get("KHRONOS_HTTP_PROBE_PORT") or http.get("probe_port")
    return None if value is None else port(source, value, key)


def port(source: str, value: object, key: str) -> int:
    text = str(value).strip() if isinstance(value, int | str) else ""
    digits = text.isascii() and text.isdigit() and len(text) <= 5
    if isinstance(value, bool) or not digits or not 0 <= int(text) <= 65535:
        raise _fail(source, key, value, "a port number from 0 to 65535")
    return int(text)


def clean_url(value: str) -> bool:
    """Whether ``value`` parses as a URL with a host (or a unix path) and a valid port, and
    holds no whitespace or control character."""
    if any(c.isspace() or not c.isprintable() for c in value):
        return False
    try:
        url = urllib.parse.urlsplit(value)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return bool(url.hostname) or (url.scheme == "unix" and bool(url.path))


def redis_prefix(source: str, data: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """``KHRONOS_REDIS_PREFIX`` (which wins) or ``redis_prefix``: a word that keeps several
    environments (staging, production) apart on one Redis database; empty by default."""
    key = "KHRONOS_REDIS_PREFIX" if env.get("KHRONOS_REDIS_PREFIX") else "redis_prefix"
    value = env.get("KHRONOS_REDIS_PREFIX") or data.get("redis_prefix", "")
    if value == "":
        return ""
    if not isinstance(value, str) or not _REDIS_PREFIX.fullmatch(value):
        raise _fail(source, key, value, "1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'")
    return value
