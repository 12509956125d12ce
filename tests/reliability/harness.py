"""Shared helpers of the reliability scenarios: sizes, percentiles, answers, events."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import socket
import statistics
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from khronos_cli.control.protocol import socket_path
from khronos_cli.sandbox.ledger import FALLBACK_TEXT
from tests.instance import FAST_CONFIG, Instance

NOBODY = 65534  # the uid a hostile neighbour runs as

FULL = os.environ.get("KHRONOS_RELIABILITY") == "full"


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


async def push_all(base_url: str, count: int, chats: int) -> None:
    """Push ``count`` messages over ``chats`` chats to the sandbox at once (50 at a time)."""
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        semaphore = asyncio.Semaphore(50)

        async def push(i: int) -> None:
            async with semaphore:
                body = {"chat_id": 100_000 + i % chats, "text": f"burst {i}"}
                (await client.post("/_sandbox/messages", json=body)).raise_for_status()

        await asyncio.gather(*(push(i) for i in range(count)))
