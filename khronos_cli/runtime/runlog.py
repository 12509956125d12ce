"""``<state-dir>/run.log``: the output of a ``khronos run --detach``, rotated by size.

A detached run has no terminal, so its output (the supervisor's lines, the worker's echoed
log, the sandbox's traffic) goes to a pipe read by this small process of its own, which
appends to ``run.log`` and, past ``max_bytes``, renames it ``run.log.1`` (``.1`` to ``.2``...,
keeping ``backups`` old files), as ``logging.handlers.RotatingFileHandler`` does for
``khronos.log``. It ends when every writer has closed the pipe (the run is over). A process of
its own and not a thread of the supervisor: the supervisor forks with ``preexec_fn`` and stays
single-threaded.

Files are opened by ``statedir.open_private`` (0600, never through a symlink).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from khronos_cli import statedir

__all__ = ["RotatingWriter", "main"]

CHUNK = 65536


class RotatingWriter:
    """Appends bytes to ``path``; rotates before a write that would pass ``max_bytes``."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return statedir.open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating between lines so that no file passes ``max_bytes`` (but
        for a single line longer than that, which gets a file of its own)."""
        while data:
            room = self.max_bytes - self._size
            if len(data) <= room:
                cut = len(data)
            else:
                cut = data.rfind(b"\n", 0, room) + 1  # the whole lines that fit
                if not cut:
                    if self._size:
                        self.rotate()
                        continue
                    cut = data.find(b"\n") + 1 or len(data)
            os.write(self._fd, data[:cut])
            self._size += cut
            data = data[cut:]
            if data:
                self.rotate()

    def rotate(self) -> None:
        os.close(self._fd)
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        os.close(self._fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m khronos_cli.runtime.runlog")
    parser.add_argument("path", type=Path)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--backups", type=int, required=True)
    options = parser.parse_args(argv)
    # The run's signals are for the run: we end when our input does, having written it all.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    writer = RotatingWriter(options.path, max_bytes=options.max_bytes, backups=options.backups)
    try:
        while chunk := os.read(sys.stdin.fileno(), CHUNK):
            writer.write(chunk)
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
