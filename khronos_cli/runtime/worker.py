"""The worker: the bot process. ``python -m khronos_cli.runtime.worker --state-dir D``.

Lifecycle (uvicorn's shape): :meth:`Worker.serve` starts the parts, marks itself ready
(``READY=1``), and waits until a stop is requested — SIGTERM, SIGINT or ``khronos stop`` over the
control socket. Signal handlers only set flags. Then readiness goes false (``STOPPING=1``) and the
seven steps of :mod:`.shutdown` run; the report's exit code is the process's.

SIGHUP is a graceful stop like SIGTERM. During a stop a repeated SIGTERM or SIGHUP is logged and
ignored; a second SIGINT switches to the quick stop. The previous run's end is read at start: its
report, or ``killed`` when the run marker of a run that wrote no report is still there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from khronos_cli import config as config_module
from khronos_cli import preflight, statedir
from khronos_cli.alerts.engine import Alerts
from khronos_cli.bot.poller import OTHER_POLLER
from khronos_cli.config import Settings
from khronos_cli.control.protocol import socket_path
from khronos_cli.control.server import ControlServer
from khronos_cli.errors import ExitCode, KhronosError
from khronos_cli.runtime import heap, readout
from khronos_cli.runtime.alerting import start_alerts
from khronos_cli.runtime.api import WorkerAPI
from khronos_cli.runtime.backup import Backups
from khronos_cli.runtime.events import EventHub, listen
from khronos_cli.runtime.http import PublicServer
from khronos_cli.runtime.logs import setup_logging
from khronos_cli.runtime.notify import notify
from khronos_cli.runtime.replicas import Replicas
from khronos_cli.runtime.shutdown import Shutdown
from khronos_cli.runtime.steps import seven_steps
from khronos_cli.runtime.wiring import Parts, build, close_parts, guard

__all__ = ["Worker", "main"]

logger = logging.getLogger("khronos.worker")


class Worker:
    """One bot process: its parts, its two servers, and its stop."""

    def __init__(self, settings: Settings, *, poll_timeout: int | None = None) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.poll_timeout = poll_timeout
        self.events = EventHub()
        self.backups = Backups(settings, publish=self.events.publish)
        self.api = WorkerAPI(self)
        self.started_at = time.time()
        self.state = "starting"
        self.parts: Parts | None = None
        self.public: PublicServer | None = None
        self.control: ControlServer | None = None
        self.shutdown: Shutdown | None = None
        self.previous: dict[str, Any] | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.replicas: Replicas | None = None
        self.alerts: Alerts | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._told: str | None = None
        self._stop_requested = asyncio.Event()
        self._signals = 0
        self._starting: asyncio.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until stopped; the exit code (0 clean, 1 forced)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: a graceful stop
            loop.add_signal_handler(signum, self._on_signal, signum)
        self.previous = statedir.previous_run(self.state_dir)
        self.control = ControlServer(socket_path(self.state_dir), self.api)
        await self.control.startup()
        self._starting = asyncio.ensure_future(self.startup())  # a stop meanwhile cancels it
        try:
            await self._starting
        except asyncio.CancelledError:
            if self.shutdown is None:
                raise
        except BaseException:
            await self._abort()
            raise
        await self._stop_requested.wait()
        report = await self._stop()
        return int(report["exit_code"])

    async def startup(self) -> None:
        self.parts = parts = await build(self.settings, poll_timeout=self.poll_timeout)
        listen(parts, self.events, on_change=self._tell_state)
        await parts.breakers.startup()
        self.public = PublicServer.for_settings(self.api, self.settings)
        try:
            await self.public.startup()
        except (OSError, UnicodeError) as exc:  # a host that cannot work: exit 78, not 1
            refused = preflight.bind_error(self.settings, exc)
            if refused is None:
                raise
            raise refused from exc
        statedir.mark_running(self.state_dir, self.started_at)
        kept = await parts.outbox.load()  # first, so no new answer overtakes a kept one
        if parts.redis is not None:  # replicas: the lease elects the poller, claims dedup
            self.replicas = Replicas(
                parts.redis,
                namespace=self.settings.redis_namespace,
                snapshot=lambda: readout.replica_snapshot(self),
                claimant=await parts.bot.db(parts.bot.store.journal_id),
            )
            parts.poller.claims = self.replicas
        resumed = await parts.poller.resume()  # after the claims: only what is this replica's
        self.tasks = [
            asyncio.create_task(parts.poller.pump(), name="journal-pump"),
            asyncio.create_task(parts.outbox.run(), name="outbox-pump"),
            asyncio.create_task(self._prune(), name="retention"),
            asyncio.create_task(self.backups.run(), name="backups"),
        ]
        self.alerts = start_alerts(self)
        polling = self.settings.telegram_mode == "polling"
        if not polling:
            assert self.settings.webhook_url is not None
            await parts.bot.me()
            await parts.telegram.set_webhook(
                self.settings.webhook_url, secret_token=self.settings.webhook_secret.reveal()
            )
        if self.replicas is not None:
            replicas = self.replicas
            parts.limiters.share_replicas(lambda: replicas.count)
            task = asyncio.create_task(self.replicas.run(self._on_tick, poll=polling))
            self.tasks.append(task)
        elif polling:
            self._on_lease(True)
        frozen, young = heap.freeze()
        logger.info(
            "heap: %d start-up objects frozen, young ones collected every %d allocations",
            frozen,
            young,
        )
        self.state = "ready"
        notify("READY=1")
        self._tell_state()
        logger.info(
            "ready: http %s:%d, socket %s, backend %s; resumed %d journaled updates, %d kept "
            "messages queued",
            self.settings.http_host,
            self.public.port,
            socket_path(self.state_dir),
            self.backend,
            resumed,
            kept,
        )

    async def _prune(self) -> None:
        """Retention: drop finished rows past their age, now and every ``interval``."""
        assert self.parts is not None
        parts, keep = self.parts, self.settings.retention
        while True:
            try:
                removed = await guard(parts.breakers["database"])(
                    lambda: parts.store.prune(
                        keep.journal,
                        outbox_older_than=keep.outbox,
                        turns_older_than=keep.history,
                        keep_turns=keep.history_turns,
                    )
                )
            except KhronosError as exc:
                logger.warning("retention: pruning the database failed: %s", exc)
            else:
                if any(removed.values()):
                    logger.info("retention: pruned %s", removed)
            await asyncio.sleep(keep.interval)

    def _on_tick(self, held: bool | None) -> None:
        """Each second with replicas: Redis answered the publish, so limiters that fell back to
        local limits may rejoin; poll only while holding the lease, or alone while Redis has
        not answered since the start — until another process is seen polling the token."""
        replicas, parts = self.replicas, self.parts
        if replicas is not None and parts is not None:
            if replicas.healthy:
                parts.limiters.recovered()
            if replicas.alone and parts.poller.problem == OTHER_POLLER:
                replicas.stand_down()
                held = False
        if held is not None:
            self._on_lease(held)
        else:
            self._tell_state()

    def _tell_state(self) -> None:
        state = self.current_state
        if state != self._told:
            self._told = state
            notify(f"STATUS={state}")

    def _on_lease(self, held: bool) -> None:
        """Poll while this replica holds the poller lease (always, without Redis)."""
        running = self._poll_task is not None and not self._poll_task.done()
        if held and not running and self.shutdown is None and self.parts is not None:
            self._poll_task = asyncio.create_task(self.parts.poller.run(), name="poller")
            self.tasks.append(self._poll_task)
        elif not held and running:
            assert self._poll_task is not None and self.parts is not None
            self._poll_task.cancel()
            self.parts.poller.idle()
        self._tell_state()

    @property
    def current_state(self) -> str:
        """``ready``, or ``degraded`` while :attr:`reasons` names something that does not work
        as designed; else the lifecycle state (``starting``, ``stopping``)."""
        if self.state == "ready" and self.reasons:
            return "degraded"
        return self.state

    @property
    def reasons(self) -> list[str]:
        """Why the worker is degraded: every open breaker (each guards something users wait on:
        answers, the other provider, voice notes, sends, updates, the journal), Redis lost, and
        a poll that Telegram refuses. Empty when all is well."""
        parts, replicas = self.parts, self.replicas
        if parts is None:
            return []
        found = [f"breaker {name} open" for name, b in parts.breakers.items() if b.state == "open"]
        if replicas is not None and not replicas.healthy:
            found.append("redis unreachable: local limits" + (", polling alone" * replicas.alone))
        elif parts.limiters.degraded:
            found.append("limiters on local limits: redis did not answer")
        if parts.poller.problem:
            found.append(f"polling: {parts.poller.problem}")
        return found

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self.shutdown is None and not self._stop_requested.is_set():
            logger.info("%s: stopping (deadline %gs)", name, self.settings.shutdown.deadline)
            self._stop_requested.set()
            if self._starting is not None and not self._starting.done():
                self._begin_stop()  # a start that hangs must not hold the stop
        elif signum == signal.SIGINT and self.shutdown is not None:
            logger.warning("second SIGINT: quick stop (waits skipped, work kept)")
            self.shutdown.force()
        else:
            logger.info("%s during the stop: ignored (send SIGINT again to force)", name)

    def _begin_stop(self, deadline: float | None = None) -> Shutdown:
        """Readiness off, ``STOPPING=1``, and the seven steps started (once)."""
        if self.shutdown is None:
            if self._starting is not None and not self._starting.done():
                self._starting.cancel()  # the steps close what the start had opened
            self.state = "stopping"
            notify("STOPPING=1")
            budgets = self.settings.shutdown
            self.shutdown = Shutdown(
                seven_steps(self),
                deadline=deadline or budgets.deadline,
                quick_budget=budgets.quick_budget,
                state_dir=self.state_dir,
            )
            self.shutdown.start()
        return self.shutdown

    async def _stop(self) -> dict[str, Any]:
        report = await self._begin_stop().start()
        statedir.mark_stopped(self.state_dir)
        logger.info(
            "stopped: %s",
            json.dumps(
                {k: report[k] for k in ("result", "exit_code", "duration_s", "hung_step", "kept")}
            ),
        )
        if self.control is not None:
            await self.control.aclose()  # waits for the stop streams to send their last line
        return report

    async def _abort(self) -> None:
        """Startup failed: close whatever was opened, quietly."""
        for task in self.tasks:
            task.cancel()
        if self.public is not None:
            await self.public.aclose()
        if self.parts is not None:
            await close_parts(self.parts)
        if self.control is not None:
            await self.control.aclose()

    # -- what the api and the readout read ----------------------------------------------------

    @property
    def backend(self) -> str:
        return "redis" if self.settings.redis_url else "memory"

    @property
    def ready(self) -> bool:
        return self.current_state in ("ready", "degraded")

    @property
    def polling(self) -> bool:
        return self._poll_task is not None and not self._poll_task.done()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``work`` as one of the worker's tasks (step 2 of the stop cancels them)."""
        task = asyncio.create_task(work, name=name)
        self.tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        if task in self.tasks:
            self.tasks.remove(task)

    def request_stop(self, deadline: float | None = None) -> Shutdown:
        """``khronos stop``: the stop begins (once) and :meth:`serve` finishes it."""
        shutdown = self._begin_stop(deadline)
        self._stop_requested.set()
        return shutdown


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The worker's command line; ``env`` instead of this process's environment."""
    parser = argparse.ArgumentParser(prog="python -m khronos_cli.runtime.worker")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=None)
    options = parser.parse_args(argv)
    try:
        settings = config_module.load(options.config, env, state_dir=options.state_dir)
        preflight.require_credentials(settings)
        loop_name, run = event_loop(os.environ if env is None else env)
    except KhronosError as exc:
        print(f"khronos: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    setup_logging(settings)
    logger.info("event loop: %s", loop_name)
    heap.tune()
    try:
        code = run(Worker(settings).serve())
    except KhronosError as exc:
        logger.error("%s", exc)
        code = int(exc.exit_code)
    except OSError as exc:
        logger.error("could not start: %s", exc)
        code = int(ExitCode.FAILURE)
    return code


def event_loop(env: Mapping[str, str]) -> tuple[str, Callable[[Coroutine[Any, Any, int]], int]]:
    """The worker's event loop (:func:`.preflight.check_event_loop`, ``KHRONOS_EVENT_LOOP``):
    uvloop, libuv's loop (the bot's pipeline spends ~15 % less CPU per update on it), when
    installed, as uvicorn chooses; else the standard library's ``asyncio``."""
    if preflight.check_event_loop(env) == "asyncio":
        return "asyncio", asyncio.run
    import uvloop

    return f"uvloop {getattr(uvloop, '__version__', '')}".strip(), uvloop.run


def exit_now(code: int) -> None:
    """Everything is closed and written: flush the logs and leave without the interpreter's
    teardown (100+ ms of module and object finalization that a stopping bot has no use for)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
