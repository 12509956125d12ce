"""The control socket's wire format: paths, bodies, NDJSON lines. No I/O, standard library only.

Endpoints (all JSON; streams are NDJSON, one object per line)::

    GET    /status                 state, pids, uptime, ports, backend, how the last run ended
    GET    /breakers               {name: snapshot}, as GET /breakers/status on the public port
    POST   /breakers/{name}/open   {"reason": str, "for": seconds}: force open, with an expiry
    POST   /breakers/{name}/close  {"reason": str, "for": seconds}: force closed, with an expiry
    POST   /breakers/{name}/reset  {}: clear the force, back to closed
    GET    /limiters               {name: snapshot}, as GET /limiter/stats on the public port
    GET    /outages                [outage, ...] with their remaining seconds
    POST   /outages                {"name", "mode", "for", "probability", "status", "latency"}
    DELETE /outages[/{name}]       end one outage, or all
    GET    /events                 NDJSON stream of breaker, limiter and outage events
    POST   /stop                   {"force": bool, "deadline": s} -> NDJSON shutdown events

Every duration on the socket (a force's or an outage's ``for``, ``latency``, a stop's
``deadline``) is a finite number of seconds above zero and at most :data:`MAX_DURATION` (15 min):
whatever is forced or injected ends by itself. Errors are ``{"error": {"status": 4xx, "message":
"...", "field": "for"}}`` with that HTTP status (``field`` when one field is to blame).
"""

from __future__ import annotations

import json
from pathlib import Path

TYPE_CHECKING = False  # the CLI's fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_BODY",
    "MAX_DURATION",
    "OUTAGE_MODES",
    "SOCKET_NAME",
    "STEP_NAMES",
    "STEP_TITLES",
    "decode_line",
    "encode_document",
    "encode_line",
    "error_body",
    "socket_path",
]

SOCKET_NAME = "khronos.sock"
MAX_BODY = 64 * 1024
# The longest anything an operator forces or injects may last (breakers, outages, latencies, a
# stop's deadline): a forgotten drill heals itself. The CLI checks it before asking.
MAX_DURATION = 15 * 60.0
OUTAGE_MODES = ("down", "timeout", "slow", "errors")
DEPENDENCIES = ("anthropic-api", "telegram-api", "openai-api", "database")
# The seven shutdown steps, in order (DESIGN.md); `khronos stop` draws one row for each.
STEP_NAMES = ("http", "telegram", "jobs", "outbox", "database", "redis", "connections")
STEP_TITLES = {
    "http": "stop taking HTTP requests",
    "telegram": "stop the Telegram bot",
    "jobs": "wait for active jobs",
    "outbox": "close the message queue",
    "database": "close the database",
    "redis": "close Redis",
    "connections": "close remaining connections",
}


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def encode_line(event: dict[str, Any]) -> bytes:
    """One NDJSON line: compact JSON and a newline."""
    return json.dumps(event, separators=(",", ":"), default=str).encode() + b"\n"


def encode_document(data: Any) -> str:
    """The CLI's ``--json`` output: one compact, key-sorted document and a newline."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str) + "\n"


def decode_line(line: bytes | str) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("an event line must be a JSON object")
    return value


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}
