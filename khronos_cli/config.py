"""Settings: DESIGN.md's defaults, overridden by ``khronos.toml`` and the environment.

``load()`` is the one entry point. Every bad value raises :class:`ConfigError` naming the file,
the key, the value and what was expected; the CLI turns it into exit code 78. Secrets live only
in the environment and are wrapped in :class:`Secret`, whose ``repr`` never shows them.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from khronos_cli.errors import ConfigError

__all__ = [
    "BREAKER_DEFAULTS",
    "DEFAULT_HTTP_PORT",
    "LIMITER_DEFAULTS",
    "BotSettings",
    "BreakerSettings",
    "LimiterSettings",
    "Rate",
    "RetentionSettings",
    "Secret",
    "Settings",
    "ShutdownSettings",
    "SupervisorSettings",
    "default_state_dir",
    "llm_timeout",
    "load",
    "parse_duration",
    "parse_rate",
]

DEFAULT_HTTP_PORT = 18789
CONFIG_NAME = "khronos.toml"
MAX_POLL_TIMEOUT = 50  # Telegram's own cap on getUpdates' long poll
WEBHOOK_PORTS = (80, 88, 443, 8443)  # the only ports Telegram's cloud posts webhooks to
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{16,256}$")  # Telegram: 1-256 of these; ours: 16+
_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {
    "ms": 0.001, "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
}  # fmt: skip


class Secret:
    """A token or key from the environment; ``str()``/``repr()`` never reveal it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Rate:
    """``limit`` events per ``period`` seconds, e.g. ``Rate(20, 60.0)`` for 20/min."""

    limit: int
    period: float

    def __str__(self) -> str:
        for unit, seconds in (("h", 3600.0), ("min", 60.0), ("s", 1.0)):
            if self.period >= seconds and self.period % seconds == 0:
                count = int(self.period // seconds)
                return f"{self.limit}/{'' if count == 1 else count}{unit}"
        return f"{self.limit}/{self.period * 1000:g}ms"


@dataclass(frozen=True)
class BreakerSettings:
    """One circuit breaker. Times are seconds, ``error_threshold`` a percentage."""

    name: str
    timeout: float = 10.0
    error_threshold: float = 50.0
    reset_timeout: float = 30.0
    volume_threshold: int = 5
    rolling_window: float = 10.0
    buckets: int = 10
    half_open_max_calls: int = 1
    half_open_max_wait: float | None = None  # None: the breaker's timeout plus one second
    health_check_interval: float = 5.0
    policy: Literal["error_rate", "consecutive"] = "error_rate"
    fail_max: int = 5  # the consecutive-failure policy's threshold (pybreaker's rule)


@dataclass(frozen=True)
class LimiterSettings:
    """One limiter. With ``group_by`` set, the plain fields apply to each key (Bottleneck's
    Group semantics) and the ``global_*`` fields to all keys together."""

    name: str
    group_by: str | None = None
    max_concurrent: int | None = None
    min_time: float = 0.0
    max_queued: int | None = None
    rates: tuple[Rate, ...] = ()
    group_rates: tuple[Rate, ...] = ()  # keys that are group chats (negative Telegram chat ids)
    global_max_concurrent: int | None = None
    global_min_time: float = 0.0
    global_rates: tuple[Rate, ...] = ()
    strategy: Literal["reject", "drop-oldest", "drop-lowest"] = "reject"
    idle_timeout: float = 60.0


@dataclass(frozen=True)
class ShutdownSettings:
    """The stop's budgets (DESIGN.md: 30 s overall, 10 s for active jobs, 2 s for a quick stop)."""

    deadline: float = 30.0
    jobs_timeout: float = 10.0
    outbox_timeout: float = 5.0
    quick_budget: float = 2.0


@dataclass(frozen=True)
class SupervisorSettings:
    """Restart backoff: ``restart_delay`` doubling, capped, reset after ``healthy_after`` up."""

    restart_delay: float = 1.0
    max_restart_delay: float = 60.0
    healthy_after: float = 60.0
    crashloop_after: int = 10
    kill_after: float = 40.0


@dataclass(frozen=True)
class BotSettings:
    """How the bot answers: which group messages (``addressed``: commands to it, mentions of
    it, replies to it; ``all``; ``off``), how much history it sends, and its output caps."""

    groups: Literal["addressed", "all", "off"] = "addressed"
    history_turns: int = 20
    anthropic_max_tokens: int = 1024
    openai_max_tokens: int = 1024
    poll_timeout: float = 30.0  # getUpdates' long poll (Telegram caps it at 50 s)


@dataclass(frozen=True)
class RetentionSettings:
    """How long finished rows stay in ``khronos.db``, and how often they are pruned.

    ``journal`` keeps done update ids (the dedup of redelivered updates: keep them longer than
    the 24 h Telegram keeps updates), ``outbox`` sent or given-up messages, ``history`` the
    conversation turns (and at most ``history_turns`` per chat).
    """

    journal: float = 48 * 3600.0
    outbox: float = 48 * 3600.0
    history: float = 30 * 24 * 3600.0
    history_turns: int = 200
    interval: float = 600.0


def llm_timeout(max_tokens: int) -> float:
    """The default timeout of an LLM call that may write ``max_tokens`` tokens, non-streamed:
    10 s to the first token plus the tokens at 50 per second (a 1,024-token answer: 30.5 s;
    Anthropic's SDK budgets 28.8 s for it)."""
    return 10.0 + max_tokens / 50.0


BREAKER_DEFAULTS: Mapping[str, BreakerSettings] = {
    "anthropic-api": BreakerSettings("anthropic-api", timeout=llm_timeout(1024)),
    "telegram-api": BreakerSettings("telegram-api", timeout=5.0, reset_timeout=30.0),
    # getUpdates alone: a long poll of 30 s plus a margin; a few failed polls in a row open it.
    "telegram-updates": BreakerSettings(
        "telegram-updates", timeout=40.0, reset_timeout=5.0, policy="consecutive", fail_max=3
    ),
    "openai-api": BreakerSettings("openai-api", timeout=llm_timeout(1024)),
    # Voice notes: each call's own deadline grows with the note's duration; this is the cap.
    "openai-transcription": BreakerSettings(
        "openai-transcription", timeout=120.0, reset_timeout=30.0
    ),
    "database": BreakerSettings("database", timeout=5.0, error_threshold=30.0, reset_timeout=15.0),
}

LIMITER_DEFAULTS: Mapping[str, LimiterSettings] = {
    # Telegram: ~1 msg/s per chat, 20 msg/min per group, ~30 msg/s for the bot overall.
    "telegram": LimiterSettings(
        "telegram",
        group_by="chat",
        max_concurrent=1,
        max_queued=100,
        rates=(Rate(1, 1.0),),
        group_rates=(Rate(20, 60.0),),
        # DESIGN.md says 35 ms, which caps the bot at 28.6 msg/s (95 % of Telegram's 30/s);
        # the sliding 30/s window is what holds the budget, so the spacing only smooths bursts.
        global_min_time=0.030,
        global_rates=(Rate(30, 1.0),),
    ),
    "global": LimiterSettings("global", max_concurrent=100, min_time=0.010),
    "anthropic": LimiterSettings(
        "anthropic", group_by="user", max_concurrent=3, min_time=0.5, max_queued=50
    ),
    "whisper": LimiterSettings("whisper", max_concurrent=2, min_time=1.0, max_queued=10),
}


@dataclass(frozen=True)
class Settings:
    """Everything a khronos process is configured with."""

    state_dir: Path
    config_path: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORT
    redis_url: str | None = None
    telegram_token: Secret = field(default_factory=lambda: Secret(""))
    anthropic_api_key: Secret = field(default_factory=lambda: Secret(""))
    openai_api_key: Secret = field(default_factory=lambda: Secret(""))
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    telegram_base_url: str = "https://api.telegram.org"
    telegram_mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None  # the public https URL Telegram posts to (webhook mode)
    anthropic_base_url: str = "https://api.anthropic.com"
    openai_base_url: str = "https://api.openai.com"
    anthropic_model: str = "claude-sonnet-4-5"
    openai_model: str = "gpt-4o-mini"
    bot: BotSettings = field(default_factory=lambda: BotSettings())
    retention: RetentionSettings = field(default_factory=lambda: RetentionSettings())
    shutdown: ShutdownSettings = field(default_factory=lambda: ShutdownSettings())
    supervisor: SupervisorSettings = field(default_factory=lambda: SupervisorSettings())
    breakers: Mapping[str, BreakerSettings] = field(default_factory=lambda: dict(BREAKER_DEFAULTS))
    limiters: Mapping[str, LimiterSettings] = field(default_factory=lambda: dict(LIMITER_DEFAULTS))

    def to_json(self) -> dict[str, Any]:
        """The effective settings as JSON-ready data; secrets show only as "set" or "unset"."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, Rate | type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Rate | Path):
        return str(value)
    if isinstance(value, Secret):
        return "set" if value else "unset"
    return value


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$KHRONOS_STATE_DIR``, else ``$XDG_STATE_HOME/khronos``, else ``~/.local/state/khronos``."""
    env = os.environ if env is None else env
    if env.get("KHRONOS_STATE_DIR"):
        return Path(env["KHRONOS_STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "khronos"


def parse_duration(value: object, *, source: str = "argument", key: str = "duration") -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"2m"`` or ``"1h"``."""
    if isinstance(value, bool):
        raise ConfigError(source, key, value, "seconds or a duration like '500ms', '30s', '2m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(source, key, value, "seconds or a duration like '500ms', '30s', '2m'")
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(source, key, value, "a duration of zero or more seconds")
    return seconds


def parse_rate(value: object, *, source: str = "argument", key: str = "rate") -> Rate:
    """A :class:`Rate` from ``"30/s"``, ``"20/min"`` or ``"100/10s"``."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match[1]) < 1:
        raise ConfigError(source, key, value, "a rate like '30/s', '20/min' or '100/10s'")
    period = float(match[2] or 1) * _RATE_UNITS[match[3]]
    if period <= 0:
        raise ConfigError(source, key, value, "a rate with a period above zero")
    return Rate(int(match[1]), period)


def load(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    state_dir: Path | str | None = None,
) -> Settings:
    """Build the settings from defaults, the TOML file and the environment.

    ``path`` is ``--config``; without it ``<state-dir>/khronos.toml`` is read when it exists.
    A missing explicit file, bad TOML, an unknown key or a bad value raises ConfigError.
    """
    env = os.environ if env is None else env
    root = Path(state_dir).expanduser() if state_dir else default_state_dir(env)
    config_path = Path(path).expanduser() if path else None
    if config_path is None and (root / CONFIG_NAME).is_file():
        config_path = root / CONFIG_NAME
    data: dict[str, Any] = {}
    if config_path is not None:
        data = _read_toml(config_path)
    return _Parser(str(config_path) if config_path else "environment").settings(
        data, env, root, config_path
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(str(path), "(file)", str(path), "an existing TOML file") from None
    except OSError as exc:
        raise ConfigError(
            str(path), "(file)", str(path), f"a readable file ({exc.strerror})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", str(exc), "valid TOML") from None


class _Parser:
    """Turns the raw TOML tables into settings, with errors that point at the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: object, expected: str) -> ConfigError:
        return ConfigError(self.source, key, value, expected)

    def settings(
        self, data: dict[str, Any], env: Mapping[str, str], root: Path, path: Path | None
    ) -> Settings:
        top = {
            "redis_url",
            "http",
            "telegram",
            "anthropic",
            "openai",
            "bot",
            "retention",
            "breakers",
            "limiters",
            "shutdown",
            "supervisor",
        }
        self.known(data, top, "")
        tables = {
            "http": self.table(data, "http", {"host", "port"}),
            "telegram": self.table(
                data, "telegram", {"base_url", "mode", "webhook_url", "poll_timeout"}
            ),
            "anthropic": self.table(data, "anthropic", {"base_url", "model", "max_tokens"}),
            "openai": self.table(data, "openai", {"base_url", "model", "max_tokens"}),
        }
        d = Settings(state_dir=root)
        bot = self.bot(data, tables)
        port_key = "KHRONOS_HTTP_PORT" if "KHRONOS_HTTP_PORT" in env else "http.port"
        port = env.get("KHRONOS_HTTP_PORT", tables["http"].get("port", d.http_port))
        return dataclasses.replace(
            d,
            config_path=path,
            http_host=self.string(tables, "http.host", d.http_host),
            http_port=self.port(port, port_key),
            redis_url=env.get("REDIS_URL") or self.optional_url(data, "redis_url"),
            telegram_token=Secret(env.get("TELEGRAM_BOT_TOKEN", "")),
            anthropic_api_key=Secret(env.get("ANTHROPIC_API_KEY", "")),
            openai_api_key=Secret(env.get("OPENAI_API_KEY", "")),
            webhook_secret=Secret(env.get("KHRONOS_WEBHOOK_SECRET", "")),
            telegram_base_url=self.url(tables, "telegram.base_url", d.telegram_base_url, env),
            telegram_mode=self.mode(tables["telegram"], env),
            webhook_url=self.webhook_url(tables["telegram"], env),
            anthropic_base_url=self.url(tables, "anthropic.base_url", d.anthropic_base_url, env),
            openai_base_url=self.url(tables, "openai.base_url", d.openai_base_url, env),
            anthropic_model=self.string(tables, "anthropic.model", d.anthropic_model),
            openai_model=self.string(tables, "openai.model", d.openai_model),
            bot=bot,
            retention=self.section(RetentionSettings, data, "retention"),
            shutdown=self.section(ShutdownSettings, data, "shutdown"),
            supervisor=self.section(SupervisorSettings, data, "supervisor"),
            breakers=self.breakers(data.get("breakers", {}), bot),
            limiters=self.limiters(data.get("limiters", {})),
        )

    def bot(self, data: Mapping[str, Any], tables: Mapping[str, Any]) -> BotSettings:
        """``[bot]``, plus the output caps of ``[anthropic]``/``[openai]`` and the long poll."""
        table = self.table(data, "bot", {"groups", "history_turns"})
        values = self.fields(BotSettings, table, "bot.")
        for provider in ("anthropic", "openai"):
            if "max_tokens" in tables[provider]:
                full = f"{provider}.max_tokens"
                value = self.field(full, "max_tokens", tables[provider]["max_tokens"])
                values[f"{provider}_max_tokens"] = value
        if "poll_timeout" in tables["telegram"]:
            poll = self.field(
                "telegram.poll_timeout", "poll_timeout", tables["telegram"]["poll_timeout"]
            )
            if not isinstance(poll, float) or not 1 <= poll <= MAX_POLL_TIMEOUT:
                raise self.fail(
                    "telegram.poll_timeout",
                    tables["telegram"]["poll_timeout"],
                    f"a long poll of 1 to {MAX_POLL_TIMEOUT} seconds",
                )
            values["poll_timeout"] = poll
        return BotSettings(**values)

    # -- tables -------------------------------------------------------------------------------

    def known(self, table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(prefix + key, table[key], "one of " + ", ".join(sorted(allowed)))

    def table(self, data: Mapping[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, value, "a table")
        self.known(value, allowed, name + ".")
        return value

    def section(self, cls: type[Any], data: Mapping[str, Any], name: str) -> Any:
        table = self.table(data, name, {f.name for f in dataclasses.fields(cls)})
        return cls(**self.fields(cls, table, name + "."))

    def breakers(self, raw: object, bot: BotSettings) -> dict[str, BreakerSettings]:
        """The breakers; a timeout not given follows what the call must fit: an LLM's output cap
        (:func:`llm_timeout`) and getUpdates' long poll (plus 10 s)."""
        result = dict(BREAKER_DEFAULTS)
        derived = {
            "anthropic-api": llm_timeout(bot.anthropic_max_tokens),
            "openai-api": llm_timeout(bot.openai_max_tokens),
            "telegram-updates": bot.poll_timeout + 10.0,
        }
        tables = self.named_tables(raw, "breakers")
        for name, timeout in derived.items():
            if "timeout" not in tables.get(name, {}):
                result[name] = dataclasses.replace(result[name], timeout=timeout)
        for name, table in tables.items():
            base = result.get(name, BreakerSettings(name))
            result[name] = dataclasses.replace(
                base, **self.fields(BreakerSettings, table, f"breakers.{name}.")
            )
        updates = result["telegram-updates"]
        if updates.timeout < bot.poll_timeout + 1:
            raise self.fail(
                "breakers.telegram-updates.timeout",
                updates.timeout,
                f"at least the long poll ({bot.poll_timeout:g}s, telegram.poll_timeout) plus 1s",
            )
        return result

    def limiters(self, raw: object) -> dict[str, LimiterSettings]:
        result = dict(LIMITER_DEFAULTS)
        for name, table in self.named_tables(raw, "limiters").items():
            base = result.get(name, LimiterSettings(name))
            result[name] = dataclasses.replace(
                base, **self.fields(LimiterSettings, table, f"limiters.{name}.")
            )
        return result

    def named_tables(self, raw: object, prefix: str) -> dict[str, dict[str, Any]]:
        if not isinstance(raw, dict):
            raise self.fail(prefix, raw, "a table of named tables")
        for name, table in raw.items():
            if not isinstance(table, dict):
                raise self.fail(f"{prefix}.{name}", table, "a table")
        return raw

    def fields(self, cls: type[Any], table: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)} - {"name"}
        self.known(table, names, prefix)
        return {key: self.field(prefix + key, key, value) for key, value in table.items()}

    # -- values -------------------------------------------------------------------------------

    def field(self, full: str, key: str, value: object) -> object:
        if key in _DURATIONS:
            seconds = parse_duration(value, source=self.source, key=full)
            if seconds == 0 and key in _POSITIVE_DURATIONS:
                raise self.fail(full, value, "a duration above zero")
            return seconds
        if key in _OPTIONAL_DURATIONS:
            return None if value == "none" else parse_duration(value, source=self.source, key=full)
        if key in _RATES:
            if not isinstance(value, list):
                raise self.fail(full, value, "a list of rates like ['1/s', '20/min']")
            return tuple(parse_rate(v, source=self.source, key=full) for v in value)
        if key in _COUNTS or key in _OPTIONAL_COUNTS:
            if key in _OPTIONAL_COUNTS and value == "none":
                return None
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                expected = "a whole number of 1 or more" + (
                    " or 'none'" if key in _OPTIONAL_COUNTS else ""
                )
                raise self.fail(full, value, expected)
            return value
        if key == "error_threshold":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= 100
            ):
                raise self.fail(full, value, "a percentage above 0 and at most 100")
            return float(value)
        return self.choice(full, key, value)

    def choice(self, full: str, key: str, value: object) -> object:
        choices = _CHOICES[key]
        if key == "group_by" and value == "none":
            return None
        if value not in choices:
            raise self.fail(full, value, "one of " + ", ".join(repr(c) for c in choices))
        return value

    def string(self, tables: Mapping[str, Any], dotted: str, default: str) -> str:
        table, key = dotted.split(".")
        value = tables[table].get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(dotted, value, "a non-empty string")
        return value

    def url(
        self, tables: Mapping[str, Any], dotted: str, default: str, env: Mapping[str, str]
    ) -> str:
        """A base URL from the file, or ``KHRONOS_<TABLE>_BASE_URL`` (which wins)."""
        variable = f"KHRONOS_{dotted.split('.')[0].upper()}_BASE_URL"
        if env.get(variable):
            value, key = env[variable], variable
        else:
            value, key = self.string(tables, dotted, default), dotted
        if not value.startswith(("http://", "https://")):
            raise self.fail(key, value, "an http:// or https:// URL")
        return value.rstrip("/")

    def mode(
        self, telegram: Mapping[str, Any], env: Mapping[str, str]
    ) -> Literal["polling", "webhook"]:
        if self.choice("telegram.mode", "mode", telegram.get("mode", "polling")) == "polling":
            return "polling"
        if not _WEBHOOK_SECRET.match(env.get("KHRONOS_WEBHOOK_SECRET", "")):
            raise ConfigError(
                "environment",
                "KHRONOS_WEBHOOK_SECRET",
                "(hidden)",
                "16 to 256 characters of A-Z, a-z, 0-9, _ and - in webhook mode "
                "(Telegram refuses any other secret_token)",
            )
        return "webhook"

    def webhook_url(self, telegram: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
        """The URL Telegram posts to, checked as Telegram checks it: https on port 80, 88, 443
        or 8443. A loopback host may use http and any port, as a local Bot API server
        (``telegram-bot-api --local``) allows."""
        mode = telegram.get("mode", "polling")
        key = "KHRONOS_WEBHOOK_URL" if env.get("KHRONOS_WEBHOOK_URL") else "telegram.webhook_url"
        value = env.get("KHRONOS_WEBHOOK_URL") or telegram.get("webhook_url")
        if value is None:
            if mode == "webhook":
                raise self.fail("telegram.webhook_url", None, "the public URL Telegram posts to")
            return None
        expected = f"an https:// URL on port {', '.join(map(str, WEBHOOK_PORTS))}"
        if not isinstance(value, str):
            raise self.fail(key, value, expected)
        try:
            url = urllib.parse.urlsplit(value)
            port = url.port
        except ValueError:
            raise self.fail(key, value, expected) from None
        host = url.hostname or ""
        if _LOOPBACK.match(host if ":" not in host else f"[{host}]"):
            if url.scheme in ("http", "https"):
                return value
            raise self.fail(key, value, "an http:// or https:// URL")
        if url.scheme != "https" or not host:
            raise self.fail(key, value, expected)
        if (port or 443) not in WEBHOOK_PORTS:
            raise self.fail(key, value, expected + " (Telegram posts to no other port)")
        return value

    def optional_url(self, data: Mapping[str, Any], key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
            raise self.fail(key, value, "a redis://, rediss:// or unix:// URL")
        return value

    def port(self, value: object, key: str) -> int:
        text = str(value).strip() if isinstance(value, int | str) else ""
        if isinstance(value, bool) or not text.isdigit() or not 0 <= int(text) <= 65535:
            raise self.fail(key, value, "a port number from 0 to 65535")
        return int(text)


_SHUTDOWN = {"deadline", "jobs_timeout", "outbox_timeout", "quick_budget"}
_SUPERVISOR = {"restart_delay", "max_restart_delay", "healthy_after", "kill_after"}
_RETENTION = {"journal", "outbox", "history", "interval"}
_DURATIONS = {
    "timeout",
    "reset_timeout",
    "rolling_window",
    "health_check_interval",
    "min_time",
    "global_min_time",
    "idle_timeout",
    "poll_timeout",
    *_SHUTDOWN,
    *_SUPERVISOR,
    *_RETENTION,
}
_POSITIVE_DURATIONS = {
    "timeout",
    "reset_timeout",
    "rolling_window",
    "health_check_interval",
    "idle_timeout",
    "poll_timeout",
    *_SHUTDOWN,
    *_SUPERVISOR,
    *_RETENTION,
}
_OPTIONAL_DURATIONS = {"half_open_max_wait"}
_RATES = {"rates", "group_rates", "global_rates"}
_COUNTS = {
    "volume_threshold",
    "buckets",
    "half_open_max_calls",
    "fail_max",
    "crashloop_after",
    "history_turns",
    "max_tokens",
}
_OPTIONAL_COUNTS = {"max_concurrent", "max_queued", "global_max_concurrent"}
_CHOICES: dict[str, tuple[object, ...]] = {
    "policy": ("error_rate", "consecutive"),
    "strategy": ("reject", "drop-oldest", "drop-lowest"),
    "group_by": ("chat", "user", "none"),
    "mode": ("polling", "webhook"),
    "groups": ("addressed", "all", "off"),
}
