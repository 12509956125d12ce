"""The worker's backups: ``khronos backup`` over the control socket, and the scheduled ones.

A copy runs on a thread of its own (:func:`khronos_cli.backup.copy.take`: its own SQLite
connection, a held read snapshot, pages per step), so neither the event loop nor the store's
thread waits for it; one copy at a time. A scheduled copy is due ``interval`` after the newest
copy in the backup directory (the first one at most a minute after the start, so a worker that
restarts often still takes them), and after each success the directory is rotated.

A failed copy (a full disk, an unwritable directory, ...) is logged as a warning, counted
(``khronos_backups_total{outcome="failed"}``), shown in ``khronos status`` and published as a
``backup`` event; it never stops the bot, and the next one is tried at the next interval. A stop
cancels a copy in progress: it ends within one step and leaves no file behind.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from khronos_cli import statedir
from khronos_cli.backup import catalog
from khronos_cli.backup.copy import Aborted, Copy, take
from khronos_cli.errors import KhronosError
from khronos_cli.settings import Settings

__all__ = ["FIRST_AFTER", "Backups"]

logger = logging.getLogger("khronos.backup")

FIRST_AFTER = 60.0  # the first scheduled copy at most this long after the start


class Backups:
    """One worker's backups: taking them, the schedule, and what status and metrics show."""

    def __init__(
        self,
        settings: Settings,
        *,
        publish: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings.backup
        self.source = settings.state_dir / statedir.DB_FILE
        self.dir = catalog.resolve_dir(settings.state_dir, self.settings.dir)
        self.ok = 0
        self.failed = 0
        self.last_ok: dict[str, Any] | None = None
        self.last_failure: dict[str, Any] | None = None
        self.running: dict[str, Any] | None = None
        self.next_at: float | None = None
        self._publish = publish or (lambda topic, **fields: None)
        self._clock = clock

    async def take(self, path: Path | None = None, *, scheduled: bool = False) -> dict[str, Any]:
        """One copy into ``path`` (a file or a directory; default: the backup directory); what
        was written. Raises KhronosError when it failed (counted and logged first)."""
        if self.running is not None:
            if scheduled:
                logger.info("scheduled backup skipped: another one is being written")
            raise KhronosError(
                f"a backup is already being written ({self.running['target']}); try again when "
                "it ends"
            )
        now = self._clock()
        self.running = {"target": str(path or self.dir), "started_at": now}
        loop = asyncio.get_running_loop()
        try:
            target = catalog.target(path or self.dir, now, create=path is None)
            self.running["target"] = str(target)
            catalog.sweep(self.dir)
            abort = threading.Event()
            work = loop.run_in_executor(None, self._copy, target, abort)
            try:
                copy = await asyncio.shield(work)
            except asyncio.CancelledError:
                abort.set()  # the copy stops within one step and removes its file
                await asyncio.wait([work])
                raise
        except (OSError, sqlite3.Error, Aborted) as exc:
            self._failed(now, exc, scheduled=scheduled)
            raise KhronosError(f"backup failed: {_reason(exc)}") from None
        finally:
            self.running = None
        self.ok += 1
        self.last_ok = copy.to_json()
        logger.info(
            "backup written: %s (%s bytes, sha256 %s, %.2fs)",
            copy.path,
            copy.size,
            copy.sha256,
            copy.duration,
        )
        self._publish("backup", kind="ok", path=copy.path, size=copy.size, scheduled=scheduled)
        result = {**self.last_ok, "scheduled": scheduled, "rotated": []}
        if scheduled:
            keep = self.settings
            try:
                result["rotated"] = await asyncio.to_thread(
                    catalog.rotate, self.dir, keep.keep, keep.keep_for, self._clock()
                )
            except OSError as exc:  # the copy is good; the old ones stay until the next one
                logger.warning("backup rotation failed: %s", _reason(exc))
            if result["rotated"]:
                logger.info("backup rotation removed %s", ", ".join(result["rotated"]))
        return result

    def _copy(self, target: Path, abort: threading.Event) -> Copy:
        return take(
            self.source,
            target,
            pages_per_step=self.settings.pages_per_step,
            bandwidth=self.settings.bandwidth,
            abort=abort,
        )

    def _failed(self, now: float, exc: BaseException, *, scheduled: bool) -> None:
        self.failed += 1
        reason = _reason(exc)
        self.last_failure = {"at": now, "error": reason, "scheduled": scheduled}
        logger.warning("backup failed: %s", reason)
        self._publish("backup", kind="failed", error=reason, scheduled=scheduled)

    async def run(self) -> None:
        """The schedule: a copy every ``interval`` (nothing when it is none), until cancelled."""
        interval = self.settings.interval
        if interval is None:
            return
        try:
            newest = await asyncio.to_thread(catalog.listing, self.dir, verify=False)
        except OSError:
            newest = []  # an unreadable directory: the first copy will say why it fails
        now = self._clock()
        first = now + min(interval, FIRST_AFTER)
        self.next_at = max(first, newest[0]["taken_at"] + interval) if newest else first
        while True:
            await asyncio.sleep(max(0.0, self.next_at - self._clock()))
            try:
                await self.take(scheduled=True)
            except KhronosError:
                pass  # logged, counted and shown already: the bot goes on
            except Exception:  # never the end of the schedule, nor of the bot
                logger.exception("scheduled backup hit an unexpected error")
            self.next_at = self._clock() + interval

    async def listing(self) -> dict[str, Any]:
        """``khronos backup --list``: the copies in the backup directory, each hashed."""
        return {
            "dir": str(self.dir),
            "backups": await asyncio.to_thread(catalog.listing, self.dir),
        }

    def snapshot(self) -> dict[str, Any]:
        """What ``khronos status`` shows in its backup row and ``/metrics`` counts."""
        return {
            "dir": str(self.dir),
            "interval": self.settings.interval,
            "keep": self.settings.keep,
            "ok": self.ok,
            "failed": self.failed,
            "last_ok": self.last_ok,
            "last_failure": self.last_failure,
            "running": self.running,
            "next_at": self.next_at,
        }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__
