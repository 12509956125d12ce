"""Loading the settings: DESIGN.md's defaults, overridden by ``khronos.toml`` and the environment.

``load()`` is the one entry point. Every bad value raises :class:`ConfigError` naming the file,
the key, the value and what was expected, on one line; the CLI turns it into exit code 78. The
settings themselves are :mod:`khronos_cli.settings`; what each key may hold (kinds and ranges)
is :mod:`khronos_cli.config_values`; what needs more than the file (credentials, the public
port's address) is :mod:`khronos_cli.preflight`.

Only the breakers and limiters khronos wires into its calls may be configured: another name (a
typo such as ``[breakers.anthropic_api]``) would configure nothing, so it is refused with the
known names. Secrets come from the environment, ``NAME_FILE`` or systemd credentials
(:mod:`khronos_cli.secrets`), wrapped in :class:`Secret`, and are never echoed in an error:
neither a bad token nor a string under a key khronos does not know.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from khronos_cli import config_addresses as addresses
from khronos_cli import statedir
from khronos_cli.config_values import (
    chat_ids,
    check,
    choice,
    parse_duration,
    parse_rate,
    seconds_text,
)
from khronos_cli.errors import ConfigError
from khronos_cli.kinds import ChatIds, Choice, Kind, kind_of
from khronos_cli.redaction import Secret
from khronos_cli.secrets import api_key, bot_token, http_token, read_secret
from khronos_cli.settings import (
    BREAKER_DEFAULTS,
    DEFAULT_HTTP_PORT,
    LIMITER_DEFAULTS,
    AlertSettings,
    BackupSettings,
    BotSettings,
    BreakerSettings,
    LimiterSettings,
    LogSettings,
    Rate,
    RetentionSettings,
    Settings,
    ShutdownSettings,
    SupervisorSettings,
    llm_timeout,
)
from khronos_cli.statedir import default_state_dir

__all__ = [  # the settings are re-exported: ``from khronos_cli.config import Settings`` works
    "BREAKER_DEFAULTS",
    "DEFAULT_HTTP_PORT",
    "LIMITER_DEFAULTS",
    "AlertSettings",
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

MAX_CONFIG_BYTES = 1024 * 1024  # a khronos.toml is a few hundred bytes
MAX_POLL_TIMEOUT = 50  # Telegram's own cap on getUpdates' long poll


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
    if config_path is None and (root / statedir.CONFIG_FILE).is_file():
        config_path = root / statedir.CONFIG_FILE
    data: dict[str, Any] = {}
    if config_path is not None:
        data = _read_toml(config_path)
    return _Parser(str(config_path) if config_path else "environment").settings(
        data, env, root, config_path
    )


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's tables; every way a file can be unreadable is one ConfigError."""
    source = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(source, "(file)", source, "an existing TOML file") from None
    except OSError as exc:
        raise ConfigError(source, "(file)", source, f"a readable file ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        expected = f"a TOML file of at most {MAX_CONFIG_BYTES // 1024} KiB"
        raise ConfigError(source, "(file)", source, expected)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte {raw[exc.start]:#04x} at offset {exc.start}"
        raise ConfigError(source, "(encoding)", where, "a UTF-8 text file") from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(
            source, "(syntax)", "tables or arrays nested too deep", "valid TOML of sane depth"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", str(exc), "valid TOML") from None
    except ValueError:  # an integer of thousands of digits (Python's int conversion limit)
        raise ConfigError(source, "(syntax)", "a number too long to read", "valid TOML") from None


# [anthropic] / [openai] keys that are BotSettings fields named <provider>_<key>
_LLM_KEYS = frozenset({"max_tokens", "first_byte_timeout", "stall_timeout"})


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
            "redis_prefix",
            "http",
            "telegram",
            "anthropic",
            "openai",
            "bot",
            "log",
            "retention",
            "backup",
            "breakers",
            "limiters",
            "shutdown",
            "supervisor",
            "alerts",
        }
        self.known(data, top, "")
        tables = {
            "http": self.table(data, "http", {"host", "port", "probe_port"}),
            "telegram": self.table(
                data, "telegram", {"base_url", "mode", "webhook_url", "poll_timeout"}
            ),
            "anthropic": self.table(data, "anthropic", {"base_url", "model", *_LLM_KEYS}),
            "openai": self.table(data, "openai", {"base_url", "model", *_LLM_KEYS}),
        }
        d = Settings(state_dir=root)
        bot = self.bot(data, tables)
        port_key = "KHRONOS_HTTP_PORT" if "KHRONOS_HTTP_PORT" in env else "http.port"
        port = env.get("KHRONOS_HTTP_PORT", tables["http"].get("port", d.http_port))
        settings = dataclasses.replace(
            d,
            config_path=path,
            http_host=self.string(tables, "http.host", d.http_host),
            http_port=addresses.port(self.source, port, port_key),
            http_probe_port=addresses.probe_port(self.source, tables["http"], env),
            redis_url=addresses.redis_url(self.source, data, env),
            redis_prefix=addresses.redis_prefix(self.source, data, env),
            telegram_token=bot_token(env),
            anthropic_api_key=api_key(env, "ANTHROPIC_API_KEY"),
            openai_api_key=api_key(env, "OPENAI_API_KEY"),
            webhook_secret=Secret(read_secret(env, "KHRONOS_WEBHOOK_SECRET").value),
            http_token=http_token(env),
            telegram_base_url=self.url(tables, "telegram.base_url", d.telegram_base_url, env),
            telegram_mode=addresses.mode(self.source, tables["telegram"], env),
            webhook_url=addresses.webhook_url(self.source, tables["telegram"], env),
            anthropic_base_url=self.url(tables, "anthropic.base_url", d.anthropic_base_url, env),
            openai_base_url=self.url(tables, "openai.base_url", d.openai_base_url, env),
            anthropic_model=self.string(tables, "anthropic.model", d.anthropic_model),
            openai_model=self.string(tables, "openai.model", d.openai_model),
            bot=bot,
            log=self.log(data, env),
            retention=self.section(RetentionSettings, data, "retention"),
            backup=self.backup(data, env),
            shutdown=self.section(ShutdownSettings, data, "shutdown"),
            supervisor=self.section(SupervisorSettings, data, "supervisor"),
            alerts=self.alerts(data, env),
            breakers=self.breakers(data.get("breakers", {}), bot),
            limiters=self.limiters(data.get("limiters", {})),
        )
        self.relations(settings)
        return settings

    def bot(self, data: Mapping[str, Any], tables: Mapping[str, Any]) -> BotSettings:
        """``[bot]``, plus the output caps and stream limits of ``[anthropic]``/``[openai]`` and
        the long poll."""
        table = self.table(data, "bot", {"groups", "history_turns", "hedge_after"})
        values = self.fields(BotSettings, table, "bot.")
        for provider in ("anthropic", "openai"):
            for key in _LLM_KEYS & tables[provider].keys():
                kind = kind_of(BotSettings, f"{provider}_{key}")
                value = self.field(f"{provider}.{key}", kind, tables[provider][key])
                values[f"{provider}_{key}"] = value
        if "poll_timeout" in tables["telegram"]:
            poll = self.field(
                "telegram.poll_timeout",
                kind_of(BotSettings, "poll_timeout"),
                tables["telegram"]["poll_timeout"],
            )
            if not isinstance(poll, float) or not 1 <= poll <= MAX_POLL_TIMEOUT:
                raise self.fail(
                    "telegram.poll_timeout",
                    tables["telegram"]["poll_timeout"],
                    f"a long poll of 1 to {MAX_POLL_TIMEOUT} seconds",
                )
            values["poll_timeout"] = poll
        return BotSettings(**values)

    def alerts(self, data: Mapping[str, Any], env: Mapping[str, str]) -> AlertSettings:
        """``[alerts]``; ``KHRONOS_ALERTS_CHAT_IDS`` (comma-separated, or ``none``) replaces its
        chat ids (``khronos run --sandbox`` points them at the stand-in's operator chat)."""
        alerts: AlertSettings = self.section(AlertSettings, data, "alerts")
        raw = env.get("KHRONOS_ALERTS_CHAT_IDS")
        if raw is None:
            return alerts
        if raw.strip() == "none":
            return dataclasses.replace(alerts, chat_ids=())
        words = [word.strip() for word in raw.split(",") if word.strip()]
        if not all(re.fullmatch(r"-?\d{1,16}", word) for word in words):
            raise ConfigError("environment", "KHRONOS_ALERTS_CHAT_IDS", raw, "chat ids like 1,-2")
        ids = chat_ids("environment", "KHRONOS_ALERTS_CHAT_IDS", ChatIds(), [int(w) for w in words])
        return dataclasses.replace(alerts, chat_ids=ids)

    def log(self, data: Mapping[str, Any], env: Mapping[str, str]) -> LogSettings:
        """``[log]``: format, level and file, each overridden by ``KHRONOS_LOG_<KEY>`` (which
        ``khronos run --log-format`` and ``--log-level`` set)."""
        table = self.table(data, "log", {"format", "level", "file", "max_bytes", "backups"})
        values: dict[str, Any] = {
            key: self.field(f"log.{key}", kind_of(LogSettings, key), table[key])
            for key in ("max_bytes", "backups")
            if key in table
        }
        for key in ("format", "level", "file"):
            variable = f"KHRONOS_LOG_{key.upper()}"
            source, full = (
                ("environment", variable) if env.get(variable) else (self.source, f"log.{key}")
            )
            value = env.get(variable) or table.get(key)
            if value is None:
                continue
            if key == "file":
                if not isinstance(value, str) or not value or "\0" in value:
                    raise ConfigError(source, full, value, "a file path, or 'none'")
                values[key] = value
            else:
                kind = kind_of(LogSettings, key)
                assert isinstance(kind, Choice)
                values[key] = choice(
                    source, full, kind, value.lower() if isinstance(value, str) else value
                )
        return LogSettings(**values)

    def backup(self, data: Mapping[str, Any], env: Mapping[str, str]) -> BackupSettings:
        """``[backup]``; ``KHRONOS_BACKUP_INTERVAL`` wins over its ``interval`` (``khronos run
        --sandbox`` sets it to a minute when the file leaves the default)."""
        section: BackupSettings = self.section(BackupSettings, data, "backup")
        variable = "KHRONOS_BACKUP_INTERVAL"
        if env.get(variable):
            kind = kind_of(BackupSettings, "interval")
            interval = cast("float | None", check("environment", variable, kind, env[variable]))
            section = dataclasses.replace(section, interval=interval)
        return section

    # -- tables -------------------------------------------------------------------------------

    def known(self, table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        """Refuse an unknown key. Its value is shown only when it is a number or a boolean: a
        string under a key khronos does not know may be a token put in the wrong place."""
        for key, value in table.items():
            if key not in allowed:
                shown = isinstance(value, int | float)
                expected = "one of " + ", ".join(sorted(allowed))
                raise ConfigError(self.source, prefix + key, value, expected, hidden=not shown)

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
        tables = self.named_tables(raw, "breakers", BREAKER_DEFAULTS)
        for name, timeout in derived.items():
            if "timeout" not in tables.get(name, {}):
                result[name] = dataclasses.replace(result[name], timeout=timeout)
        for name, table in tables.items():
            result[name] = dataclasses.replace(
                result[name], **self.fields(BreakerSettings, table, f"breakers.{name}.")
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
        for name, table in self.named_tables(raw, "limiters", LIMITER_DEFAULTS).items():
            result[name] = dataclasses.replace(
                result[name], **self.fields(LimiterSettings, table, f"limiters.{name}.")
            )
        return result

    def named_tables(
        self, raw: object, prefix: str, known: Mapping[str, object]
    ) -> dict[str, dict[str, Any]]:
        """``[breakers.NAME]`` or ``[limiters.NAME]`` tables. Only the names khronos wires into
        its calls exist: any other (a typo such as ``anthropic_api``) would configure nothing."""
        if not isinstance(raw, dict):
            raise self.fail(prefix, raw, "a table of named tables")
        for name, table in raw.items():
            if name not in known:
                kind = prefix.rstrip("s")
                expected = f"a known {kind}: one of {', '.join(known)}"
                raise ConfigError(self.source, f"{prefix}.{name}", None, expected, hidden=True)
            if not isinstance(table, dict):
                raise self.fail(f"{prefix}.{name}", table, "a table")
        return raw

    def fields(self, cls: type[Any], table: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)} - {"name"}
        self.known(table, names, prefix)
        return {
            key: self.field(prefix + key, kind_of(cls, key), value) for key, value in table.items()
        }

    # -- values -------------------------------------------------------------------------------

    def field(self, full: str, kind: Kind, value: object) -> object:
        return check(self.source, full, kind, value)

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
            return addresses.base_url("environment", variable, env[variable])
        return addresses.base_url(self.source, dotted, self.string(tables, dotted, default))

    def relations(self, settings: Settings) -> None:
        """Values that are each in range but cannot work together."""
        stop, restart = settings.shutdown, settings.supervisor
        if restart.max_restart_delay < restart.restart_delay:
            raise self.fail(
                "supervisor.max_restart_delay",
                restart.max_restart_delay,
                f"at least supervisor.restart_delay ({seconds_text(restart.restart_delay)})",
            )
        for key in ("jobs_timeout", "outbox_timeout"):
            if getattr(stop, key) > stop.deadline:
                raise self.fail(
                    f"shutdown.{key}",
                    getattr(stop, key),
                    f"at most shutdown.deadline ({seconds_text(stop.deadline)})",
                )
        probe = settings.http_probe_port
        if probe and probe == settings.http_port:
            raise self.fail("http.probe_port", probe, "a port other than http.port")
        if restart.kill_after <= stop.deadline + stop.quick_budget:
            longest = seconds_text(stop.deadline + stop.quick_budget)
            raise self.fail(
                "supervisor.kill_after",
                restart.kill_after,
                f"more than shutdown.deadline plus shutdown.quick_budget ({longest}: the closing "
                "steps run within quick_budget after the deadline), or the supervisor kills a "
                "stop that is still within its time",
            )
