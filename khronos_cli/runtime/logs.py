"""Logging for the worker: stderr and a file, text or JSON lines, with secrets scrubbed.

``[log]`` (or ``khronos run --log-format/--log-level``) chooses the format, the level and the
file: ``khronos.log`` in the state dir under ``khronos run``'s supervisor, none under
``--no-supervise`` unless one is asked for (a service manager keeps stderr already: writing
both would log every line twice). Every logger is under ``khronos.*``.

A JSON line is one object: ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message``, then the record's own fields (``event``, ``breaker``, ``reason``...) and, for an
error with a traceback, ``exc``. Every string in it passed the scrubber.

httpx logs every request URL at INFO, and Telegram's URLs carry the bot token, so httpx and
httpcore are held at WARNING. As a second line of defence a filter replaces every configured
secret (bot token, API keys, webhook secret) with ``***`` in every record, whatever its source.

The log file is ours alone: created 0600 and opened with ``O_NOFOLLOW`` (``statedir``), so a
symlink planted under its name is refused, never appended through.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Any

from khronos_cli import statedir
from khronos_cli.config import Settings
from khronos_cli.redaction import Scrubber
from khronos_cli.statedir import LOG_FILE

__all__ = ["LOG_FILE", "JSONFormatter", "SecretFilter", "log_file", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class SecretFilter(logging.Filter):
    """Passes every record's rendered message (and traceback) through the
    :class:`~khronos_cli.redaction.Scrubber` the outbox and the upstream clients use too: each
    secret, and anything shaped like one, becomes ``***`` (the args are dropped once the
    message is rendered)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.scrub = Scrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self.scrub(text), None
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, the record's extra fields, exc."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        when = time.gmtime(record.created)
        millis = int(record.msecs)
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", when) + f".{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return self.scrub(json.dumps(line, default=str, ensure_ascii=False))


class _PrivateLogFile(logging.handlers.RotatingFileHandler):
    """The rotating log, each file opened by ``statedir.open_private`` (0600, no symlink)."""

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        fd = statedir.open_private(Path(self.baseFilename), flags)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def log_file(settings: Settings) -> Path | None:
    """The file the worker logs to besides stderr, or None (``[log] file = "none"``)."""
    chosen = settings.log.file
    if chosen == "none":
        return None
    if not chosen:
        return settings.state_dir / LOG_FILE
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else settings.state_dir / path


def setup_logging(settings: Settings) -> None:
    scrub = SecretFilter([secret.reveal() for secret in settings.secrets])
    formatter: logging.Formatter
    if settings.log.format == "json":
        formatter = JSONFormatter(scrub.scrub)
    else:
        formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    path = log_file(settings)
    if path is not None:
        handlers.append(
            _PrivateLogFile(
                path,
                maxBytes=settings.log.max_bytes,
                backupCount=settings.log.backups,
                encoding="utf-8",
            )
        )
    root = logging.getLogger()
    root.handlers.clear()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(scrub)
        root.addHandler(handler)
    root.setLevel(settings.log.level.upper())
    for noisy in ("httpx", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
