"""The worker's log: one logger namespace, JSON lines that carry fields and hide secrets."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil

import khronos_cli
from khronos_cli.redaction import Scrubber
from khronos_cli.runtime.logs import JSONFormatter, SecretFilter


def test_every_logger_is_under_khronos() -> None:
    """Importing every module creates loggers named khronos.* only, never khronos_cli.*."""
    for module in pkgutil.walk_packages(khronos_cli.__path__, "khronos_cli."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    names = [name for name in logging.Logger.manager.loggerDict if name.startswith("khronos_")]
    assert names == [], names
    assert "khronos.faults" in logging.Logger.manager.loggerDict


def test_json_line_carries_fields_and_scrubs_secrets() -> None:
    """A JSON log line has ts, level, logger, message and the record's extra fields, and a
    secret in the message or in a field shows as ***."""
    secret = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
    record = logging.LogRecord(
        "khronos.test", logging.WARNING, __file__, 1, "got %s", (secret,), None
    )
    record.breaker, record.detail = "anthropic-api", f"token {secret}"
    SecretFilter([secret]).filter(record)
    line = json.loads(JSONFormatter(Scrubber([secret])).format(record))
    assert line["level"] == "warning" and line["logger"] == "khronos.test"
    assert line["breaker"] == "anthropic-api" and line["message"] == "got ***"
    assert secret not in json.dumps(line) and line["ts"].endswith("Z")
