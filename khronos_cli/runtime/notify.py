"""systemd's readiness protocol (sd_notify): one datagram to ``$NOTIFY_SOCKET``, no dependency.

The worker speaks it (``READY=1`` at start, ``STOPPING=1`` before the first shutdown step,
``STATUS=...``). The supervisor listens with :class:`NotifyListener` on a socket of its own and
passes its path to the worker as ``NOTIFY_SOCKET``, so it learns readiness the way systemd would,
and it relays ``READY=1`` / ``STOPPING=1`` to systemd when it runs under ``Type=notify``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["NotifyListener", "notify", "parse_notify"]


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; False when there is none."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def parse_notify(datagram: bytes) -> dict[str, str]:
    """``b"READY=1\\nSTATUS=ok"`` -> ``{"READY": "1", "STATUS": "ok"}``."""
    fields: dict[str, str] = {}
    for line in datagram.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value
    return fields


class NotifyListener:
    """A datagram socket at ``path`` (0600) that calls ``on_message`` for each notification."""

    def __init__(self, path: Path, on_message: Callable[[dict[str, str]], None]) -> None:
        self.path = path
        self._on_message = on_message
        self._sock: socket.socket | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        previous = os.umask(0o177)
        try:
            sock.bind(os.fspath(self.path))
        finally:
            os.umask(previous)
        sock.setblocking(False)
        self._sock = sock
        loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            self._on_message(parse_notify(data))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
