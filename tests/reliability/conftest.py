"""Reliability scenarios: sizes, the figures each scenario records, and shared helpers.

One switch sets the size: ``KHRONOS_RELIABILITY=full`` runs the full scenarios (1,000 concurrent
``POST /chat``, 10,000 updates, long fuzz runs); without it (what ``make test`` runs) every
scenario runs in a short version. Scenarios *measure* and record their figures with the
``figures`` fixture; the figures are printed in pytest's terminal summary (whatever ``-s`` says)
and written as JSON to ``<pytest basetemp>/reliability-figures.json`` (and to
``$KHRONOS_RELIABILITY_OUT`` when set). ``RELIABILITY.md`` holds those of a full run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import socket
import statistics
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from khronos_cli.control.protocol import socket_path
from khronos_cli.sandbox.ledger import FALLBACK_TEXT
from tests.instance import FAST_CONFIG, Instance, instance, make_instance

__all__ = ["instance", "make_instance"]  # the e2e fixtures, for the scenarios here

FULL = os.environ.get("KHRONOS_RELIABILITY") == "full"

_FIGURES: dict[str, dict[str, Any]] = {}
_BASETEMP: list[Path] = []


def size(short: int, full: int) -> int:
    """``full`` under ``KHRONOS_RELIABILITY=full``, else ``short``."""
    return full if FULL else short


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds (nearest rank), for a list of seconds."""
    ordered = sorted(samples)
    if not ordered:
        return {}

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 2)

    return {
        "p50_ms": rank(0.50),
        "p99_ms": rank(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (``VmRSS`` from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise AssertionError(f"no VmRSS for pid {pid}")


def answered(instance: Instance, count: int) -> bool:
    """The stand-in saw ``count`` user messages and every one has an answer."""
    ledger = instance.ledger()
    return bool(ledger["sent"] == count and not ledger["unanswered"])


def lift_limits(config: str = FAST_CONFIG) -> str:
    """``config`` with the limiters lifted, as ``benchmarks/pipeline.py`` does: loads the
    pipeline (journal, jobs, breakers, outbox), not Telegram's 30 messages a second."""
    return config + (
        '[limiters.telegram]\nrates = ["100000/s"]\ngroup_rates = ["100000/s"]\n'
        'global_rates = ["100000/s"]\nglobal_min_time = 0\nmax_concurrent = 100\n'
        "max_queued = 100000\n"
        "[limiters.anthropic]\nmax_concurrent = 5000\nmin_time = 0\nmax_queued = 100000\n"
        "[limiters.global]\nmax_concurrent = 5000\nmin_time = 0\n"
    )


def flood_off(instance: Instance) -> None:
    """Lift the stand-in Telegram's flood limits (429s) for a load scenario."""
    body = {"per_chat": None, "per_group": None, "per_bot": None}
    instance.admin.post("/_sandbox/flood", json=body).raise_for_status()


class Events:
    """The control socket's ``GET /events`` stream, read on a thread into :attr:`items`.

    ``close()`` shuts the socket down, which ends the blocked read; the thread then exits.
    """

    def __init__(self, instance: Instance) -> None:
        self.items: list[dict[str, Any]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(socket_path(instance.state_dir)))
        self._sock.sendall(b"GET /events HTTP/1.1\r\nHost: khronos\r\n\r\n")
        self._response = http.client.HTTPResponse(self._sock)
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._subscribed.wait(10), "no subscribed event on /events"

    def _read(self) -> None:
        try:
            self._response.begin()
            for line in iter(self._response.readline, b""):
                event = json.loads(line)
                if event.get("event") == "subscribed":
                    self._subscribed.set()
                self.items.append(event)
        except (OSError, ValueError, http.client.HTTPException):
            return

    def breaker(self, name: str) -> list[str]:
        """The transitions of one breaker, in order (``open``, ``half_open``, ``close``...)."""
        return [
            str(e["kind"])
            for e in self.items
            if e.get("event") == "breaker" and e.get("breaker") == name
        ]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._response.close()
        self._sock.close()


def answered_by(instance: Instance, chats: Iterable[int]) -> dict[str, int]:
    """Which path answered the messages of ``chats``: anthropic, openai or the fallback."""
    wanted = set(chats)
    paths = {"anthropic": 0, "openai": 0, "fallback": 0, "other": 0}
    for delivery in instance.deliveries():
        if delivery["chat_id"] not in wanted:
            continue
        text = delivery["text"]
        if text.startswith("anthropic echo: "):
            paths["anthropic"] += 1
        elif text.startswith("openai echo: "):
            paths["openai"] += 1
        elif text == FALLBACK_TEXT:
            paths["fallback"] += 1
        else:
            paths["other"] += 1
    return paths


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., None]:
    """``figures(scenario, **values)`` records measured figures for the report."""
    base = tmp_path_factory.getbasetemp()
    if base not in _BASETEMP:
        _BASETEMP.append(base)

    def record(scenario: str, **values: Any) -> None:
        entry = _FIGURES.setdefault(scenario, {"test": request.node.nodeid})
        entry.update(values)
        entry["mode"] = "full" if FULL else "short"
        _write()

    return record


def _write() -> None:
    text = json.dumps(_FIGURES, indent=1, sort_keys=True, default=str)
    targets = [base / "reliability-figures.json" for base in _BASETEMP]
    if os.environ.get("KHRONOS_RELIABILITY_OUT"):
        targets.append(Path(os.environ["KHRONOS_RELIABILITY_OUT"]))
    for target in targets:
        target.write_text(text + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    mode = "full" if FULL else "short"
    terminalreporter.section(f"reliability figures ({mode})")
    for scenario, values in sorted(_FIGURES.items()):
        shown = {k: v for k, v in values.items() if k not in ("test", "mode")}
        terminalreporter.write_line(f"{scenario}: {json.dumps(shown, default=str)}")
    for base in _BASETEMP:
        terminalreporter.write_line(f"written to {base / 'reliability-figures.json'}")
