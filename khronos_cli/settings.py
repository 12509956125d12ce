"""What a khronos process is configured with: frozen settings and DESIGN.md's defaults.

:func:`khronos_cli.config.load` builds a :class:`Settings` from these defaults, ``khronos.toml``
and the environment; everything else only reads one.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from khronos_cli.kinds import (
    DAY,
    HOUR,
    MINUTE,
    ChatIds,
    Choice,
    Count,
    Duration,
    Percent,
    Rates,
    Text,
    Url,
    setting,
)
from khronos_cli.redaction import Secret, scrub

__all__ = [
    "BREAKER_DEFAULTS",
    "DEFAULT_HTTP_PORT",
    "LIMITER_DEFAULTS",
    "AlertSettings",
    "BackupSettings",
    "BotSettings",
    "BreakerSettings",
    "LimiterSettings",
    "LogSettings",
    "Rate",
    "RetentionSettings",
    "Settings",
    "ShutdownSettings",
    "SupervisorSettings",
    "llm_timeout",
]

DEFAULT_HTTP_PORT = 18789


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
    timeout: float = setting(10.0, Duration())
    error_threshold: float = setting(50.0, Percent())
    reset_timeout: float = setting(30.0, Duration())
    volume_threshold: int = setting(5, Count(1_000_000))
    rolling_window: float = setting(10.0, Duration())
    buckets: int = setting(10, Count(1_000))
    half_open_max_calls: int = setting(1, Count(1_000))
    # None: the breaker's timeout plus one second
    half_open_max_wait: float | None = setting(None, Duration(optional=True))
    health_check_interval: float = setting(5.0, Duration())
    policy: Literal["error_rate", "consecutive"] = setting(
        "error_rate", Choice(("error_rate", "consecutive"))
    )
    # the consecutive-failure policy's threshold (pybreaker's rule)
    fail_max: int = setting(5, Count(1_000_000))


@dataclass(frozen=True)
class LimiterSettings:
    """One limiter. With ``group_by`` set, the plain fields apply to each key (Bottleneck's
    Group semantics) and the ``global_*`` fields to all keys together."""

    name: str
    group_by: str | None = setting(None, Choice(("chat", "user"), none=True))
    max_concurrent: int | None = setting(None, Count(100_000, optional=True))
    min_time: float = setting(0.0, Duration(positive=False))
    max_queued: int | None = setting(None, Count(1_000_000, optional=True))
    rates: tuple[Rate, ...] = setting((), Rates())
    # keys that are group chats (negative Telegram chat ids)
    group_rates: tuple[Rate, ...] = setting((), Rates())
    global_max_concurrent: int | None = setting(None, Count(100_000, optional=True))
    global_min_time: float = setting(0.0, Duration(positive=False))
    global_rates: tuple[Rate, ...] = setting((), Rates())
    strategy: Literal["reject", "drop-oldest", "drop-lowest"] = setting(
        "reject", Choice(("reject", "drop-oldest", "drop-lowest"))
    )
    idle_timeout: float = setting(60.0, Duration(cap=DAY))


@dataclass(frozen=True)
class ShutdownSettings:
    """The stop's budgets (DESIGN.md: 30 s overall, 10 s for active jobs, 2 s for a quick stop)."""

    deadline: float = setting(30.0, Duration())
    jobs_timeout: float = setting(10.0, Duration())
    outbox_timeout: float = setting(5.0, Duration())
    quick_budget: float = setting(2.0, Duration(cap=MINUTE))


@dataclass(frozen=True)
class SupervisorSettings:
    """Restart backoff: ``restart_delay`` doubling, capped, reset after ``healthy_after`` up."""

    restart_delay: float = setting(1.0, Duration())
    max_restart_delay: float = setting(60.0, Duration(cap=DAY))
    healthy_after: float = setting(60.0, Duration(cap=DAY))
    crashloop_after: int = setting(10, Count(1_000))
    kill_after: float = setting(40.0, Duration())


@dataclass(frozen=True)
class BotSettings:
    """How the bot answers: which group messages (``addressed``: commands to it, mentions of
    it, replies to it; ``all``; ``off``), how much history it sends, and its output caps."""

    groups: Literal["addressed", "all", "off"] = setting(
        "addressed", Choice(("addressed", "all", "off"))
    )
    history_turns: int = setting(20, Count(100_000))
    anthropic_max_tokens: int = setting(1024, Count(200_000))
    openai_max_tokens: int = setting(1024, Count(200_000))
    # Answers are streamed: the headers and first event must come within first_byte_timeout, and
    # no more than stall_timeout may pass between two events; either is a timeout of that API
    # (its breaker counts it), so a hanging API is told from a long answer within seconds.
    anthropic_first_byte_timeout: float = setting(5.0, Duration(cap=MINUTE))
    anthropic_stall_timeout: float = setting(10.0, Duration(cap=MINUTE))
    openai_first_byte_timeout: float = setting(5.0, Duration(cap=MINUTE))
    openai_stall_timeout: float = setting(10.0, Duration(cap=MINUTE))
    # getUpdates' long poll (Telegram caps it at 50 s)
    poll_timeout: float = setting(30.0, Duration())
    # Ask OpenAI too when Anthropic has not answered this long after the request left (at least;
    # 3x the p90 of its recent answers when that is longer). None: never (the default: streaming
    # already tells a hang within first_byte_timeout, and hedging doubles a long answer's cost).
    hedge_after: float | None = setting(None, Duration(optional=True, cap=MINUTE))


@dataclass(frozen=True)
class LogSettings:
    """How the worker logs: ``text`` lines or ``json`` (one object a line), from ``level`` up,
    to stderr and to ``file``: empty means the default for how it runs (``khronos.log`` in the
    state dir under ``khronos run``'s supervisor; none under ``--no-supervise``, whose service
    manager keeps stderr), ``"none"`` none, else a path (relative: in the state dir). The file,
    and ``run.log`` of a detached run, rotate past ``max_bytes``, ``backups`` old files kept."""

    format: Literal["text", "json"] = setting("text", Choice(("text", "json")))
    level: Literal["debug", "info", "warning", "error"] = setting(
        "info", Choice(("debug", "info", "warning", "error"))
    )
    file: str = setting("", Text())
    # each log file (khronos.log, run.log) rotates past this
    max_bytes: int = setting(10 * 1024 * 1024, Count(1024**3))
    backups: int = setting(3, Count(100))  # rotated files kept: khronos.log.1 to .3


@dataclass(frozen=True)
class RetentionSettings:
    """How long finished rows stay in ``khronos.db``, and how often they are pruned.

    ``journal`` keeps done update ids (the dedup of redelivered updates: keep them longer than
    the 24 h Telegram keeps updates), ``outbox`` sent or given-up messages, ``history`` the
    conversation turns (and at most ``history_turns`` per chat).
    """

    journal: float = setting(48 * HOUR, Duration(cap=3650 * DAY))
    outbox: float = setting(48 * HOUR, Duration(cap=3650 * DAY))
    history: float = setting(30 * DAY, Duration(cap=3650 * DAY))
    history_turns: int = setting(200, Count(100_000))
    interval: float = setting(600.0, Duration(cap=DAY))


@dataclass(frozen=True)
class AlertSettings:
    """Alerts to the operator (``[alerts]``): Telegram chats ``chat_ids`` (none: no alerts) and
    a ``webhook_url`` POSTed JSON. Events of one kind within ``group_window`` go out as one
    message; ``per_chat`` caps the alert messages a chat receives (more are merged into the
    next); ``backlog`` and ``oldest_pending`` are the outbox's thresholds."""

    chat_ids: tuple[int, ...] = setting((), ChatIds())
    webhook_url: Secret = field(default_factory=lambda: Secret(""), metadata={"kind": Url()})
    group_window: float = setting(60.0, Duration(cap=DAY))
    per_chat: tuple[Rate, ...] = setting((Rate(10, 60.0),), Rates())
    backlog: int = setting(500, Count(10_000_000))
    oldest_pending: float = setting(300.0, Duration(cap=DAY))

    @property
    def enabled(self) -> bool:
        return bool(self.chat_ids) or bool(self.webhook_url)


@dataclass(frozen=True)
class BackupSettings:
    """Scheduled copies of ``khronos.db`` (SQLite's online backup: the bot keeps answering).

    One every ``interval`` (``"none"``: only ``khronos backup``; ``khronos run --sandbox`` takes
    one a minute while this is the default) into ``dir`` (empty: ``<state-dir>/backups``;
    relative: in the state dir); after each, the newest ``keep`` are kept, and of those none older
    than ``keep_for`` but the newest (``"none"``: no age limit). ``pages_per_step`` pages are
    copied per step of SQLite's backup, and ``bandwidth`` caps the copy (and its checksum pass)
    in MiB/s (``"none"``: as fast as the disk goes), so a big copy does not crowd the bot's own
    commits off the disk (benchmarks/backup.py: back-to-back unpaced copies of 100 MB raised
    the bot's p99 3.9x; paced at 64 MiB/s, 0.5-1.0x, a copy taking 3 s).
    """

    interval: float | None = setting(DAY, Duration(optional=True, cap=365 * DAY))
    keep: int = setting(7, Count(100_000))
    keep_for: float | None = setting(None, Duration(optional=True, cap=3650 * DAY))
    dir: str = setting("", Text())
    pages_per_step: int = setting(256, Count(1_000_000))
    bandwidth: int | None = setting(64, Count(100_000, optional=True))


def llm_timeout(max_tokens: int) -> float:
    """The default timeout of an LLM call that may write ``max_tokens`` tokens, whole: 10 s to
    the first token plus the tokens at 50 per second (a 1,024-token answer: 30.5 s; Anthropic's
    SDK budgets 28.8 s for it). The cap of a streamed answer; a hang is caught sooner by the
    stream's ``first_byte_timeout`` and ``stall_timeout``."""
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
    http_probe_port: int | None = None  # /health, /ready, /metrics alone, for probes
    redis_url: str | None = None
    redis_prefix: str = ""  # keeps environments apart on one Redis database (see redis_namespace)
    telegram_token: Secret = field(default_factory=lambda: Secret(""))
    anthropic_api_key: Secret = field(default_factory=lambda: Secret(""))
    openai_api_key: Secret = field(default_factory=lambda: Secret(""))
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    http_token: Secret = field(default_factory=lambda: Secret(""))  # the public port's bearer
    telegram_base_url: str = "https://api.telegram.org"
    telegram_mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None  # the public https URL Telegram posts to (webhook mode)
    anthropic_base_url: str = "https://api.anthropic.com"
    openai_base_url: str = "https://api.openai.com"
    anthropic_model: str = "claude-sonnet-4-5"
    openai_model: str = "gpt-4o-mini"
    bot: BotSettings = field(default_factory=lambda: BotSettings())
    log: LogSettings = field(default_factory=lambda: LogSettings())
    retention: RetentionSettings = field(default_factory=lambda: RetentionSettings())
    backup: BackupSettings = field(default_factory=lambda: BackupSettings())
    shutdown: ShutdownSettings = field(default_factory=lambda: ShutdownSettings())
    supervisor: SupervisorSettings = field(default_factory=lambda: SupervisorSettings())
    alerts: AlertSettings = field(default_factory=lambda: AlertSettings())
    breakers: Mapping[str, BreakerSettings] = field(default_factory=lambda: dict(BREAKER_DEFAULTS))
    limiters: Mapping[str, LimiterSettings] = field(default_factory=lambda: dict(LIMITER_DEFAULTS))

    @property
    def bot_id(self) -> str:
        """The bot's id: the number before the token's colon (``bot`` without a token)."""
        return self.telegram_token.reveal().partition(":")[0] or "bot"

    @property
    def redis_namespace(self) -> str:
        """Where this bot's keys live in Redis: ``khronos[:<redis_prefix>]:{<bot id>}``. The bot
        id keeps two bots on one Redis apart (each its own budgets, breakers, poller lease and
        dedup); the braces are a Redis Cluster hash tag, so all of a bot's keys share a slot."""
        base = f"khronos:{self.redis_prefix}" if self.redis_prefix else "khronos"
        return f"{base}:{{{self.bot_id}}}"

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """Every secret the process holds, for the :class:`~khronos_cli.redaction.Scrubber`."""
        return (
            self.telegram_token,
            self.anthropic_api_key,
            self.openai_api_key,
            self.webhook_secret,
            self.http_token,
            self.alerts.webhook_url,
        )

    def to_json(self) -> dict[str, Any]:
        """The effective settings as JSON-ready data; secrets show only as "set" or "unset",
        and a password in ``redis_url`` as ``***``."""
        data = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if self.redis_url:
            data["redis_url"] = scrub(self.redis_url)
        return data


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
