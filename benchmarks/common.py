"""What every benchmark here needs: free loopback ports, waiting with a deadline, a throwaway
``redis-server``, and the sandbox stand-ins (``python -m khronos_cli.sandbox``) as a process.

Benchmarks import this as ``benchmarks.common`` after putting the repository root on
``sys.path`` (each script does so first, so it runs as ``python benchmarks/<name>.py``).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Redis", "Sandbox", "free_port", "listening", "redis_server", "sandbox", "wait_until"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``condition`` until it is true; exit the benchmark when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting{' for ' + what if what else ''}")
        time.sleep(0.005)  # polling a condition with a deadline


@dataclass
class Redis:
    """A running throwaway ``redis-server``."""

    url: str
    port: int

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)


@contextmanager
def redis_server() -> Iterator[Redis]:
    """A ``redis-server`` of our own on a free loopback port (no persistence), killed on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="khronos-bench-redis-") as workdir:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", workdir]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: listening(port), 10, "redis-server")
            yield Redis(f"redis://127.0.0.1:{port}/0", port)
        finally:
            process.kill()
            process.wait()


@dataclass
class Sandbox:
    """The running stand-ins: ``env`` points khronos at them; ``info`` is their sandbox.json."""

    process: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return dict(self.info["env"])

    @property
    def telegram(self) -> str:
        """The sandbox Telegram's base URL (its ``/_sandbox/...`` admin routes live there)."""
        return str(self.info["telegram_base_url"])


@contextmanager
def sandbox(state: Path, *options: str) -> Iterator[Sandbox]:
    """``python -m khronos_cli.sandbox --state-dir STATE --users 0 --quiet OPTIONS``, stopped
    with SIGTERM on exit."""
    command = [sys.executable, "-m", "khronos_cli.sandbox", "--state-dir", str(state)]
    command += ["--users", "0", "--quiet", *options]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        info_path = state / "sandbox.json"
        wait_until(info_path.exists, 30, "the sandbox")
        yield Sandbox(process, json.loads(info_path.read_text()))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
