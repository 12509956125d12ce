"""Logging for the worker: stderr and ``<state-dir>/khronos.log``, with secrets scrubbed.

httpx logs every request URL at INFO, and Telegram's URLs carry the bot token, so httpx and
httpcore are held at WARNING. As a second line of defence a filter replaces every configured
secret (bot token, API keys, webhook secret) with ``***`` in every record, whatever its source.

The log file is ours alone: created 0600 and opened with ``O_NOFOLLOW`` (``statedir``), so a
symlink planted under its name is refused, never appended through.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from khronos_cli import statedir
from khronos_cli.config import Settings
from khronos_cli.redaction import Scrubber
from khronos_cli.statedir import LOG_FILE

__all__ = ["LOG_FILE", "SecretFilter", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


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


class _PrivateLogFile(logging.handlers.RotatingFileHandler):
    """The rotating log, each file opened by ``statedir.open_private`` (0600, no symlink)."""

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        fd = statedir.open_private(Path(self.baseFilename), flags)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def setup_logging(settings: Settings, *, level: int = logging.INFO) -> None:
    secrets = [
        settings.telegram_token.reveal(),
        settings.anthropic_api_key.reveal(),
        settings.openai_api_key.reveal(),
        settings.webhook_secret.reveal(),
    ]
    scrub = SecretFilter(secrets)
    formatter = logging.Formatter(FORMAT)
    console = logging.StreamHandler(sys.stderr)
    file = _PrivateLogFile(
        settings.state_dir / LOG_FILE, maxBytes=10 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    root = logging.getLogger()
    root.handlers.clear()
    for handler in (console, file):
        handler.setFormatter(formatter)
        handler.addFilter(scrub)
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
