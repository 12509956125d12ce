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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from khronos_cli import config as config_module
from khronos_cli import preflight, statedir
from khronos_cli.bot.poller import OTHER_POLLER
from khronos_cli.bot.store import OutboxMessage
from khronos_cli.config import Settings
from khronos_cli.control.protocol import DEPENDENCIES, socket_path
from khronos_cli.control.server import ControlServer
from khronos_cli.errors import ExitCode, JobDroppedError, KhronosError
from khronos_cli.runtime import readout
from khronos_cli.runtime.events import EventHub
from khronos_cli.runtime.http import PublicServer
from khronos_cli.runtime.logs import setup_logging
from khronos_cli.runtime.metrics import Metrics
from khronos_cli.runtime.notify import notify
from khronos_cli.runtime.replicas import Replicas
from khronos_cli.runtime.shutdown import Shutdown, read_report
from khronos_cli.runtime.steps import seven_steps
from khronos_cli.runtime.wiring import Parts, build, close_parts, guard
from khronos_cli.statedir import PREVIOUS_RUN_FILE, REPORT_FILE, RUN_MARKER
from khronos_cli.upstream.faults import DEFAULT_DURATION
from khronos_cli.upstream.llm import Turn

__all__ = ["Worker", "main"]

logger = logging.getLogger("khronos.worker")


class Worker:
    """One bot process: its parts, its two servers, and its stop."""

    def __init__(self, settings: Settings, *, poll_timeout: int | None = None) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.poll_timeout = poll_timeout
        self.events = EventHub()
        self._metrics = Metrics(self._metrics_source)
        self.started_at = time.time()
        self.state = "starting"
        self.parts: Parts | None = None
        self.public: PublicServer | None = None
        self.control: ControlServer | None = None
        self.shutdown: Shutdown | None = None
        self.previous: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.replicas: Replicas | None = None
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
        self.previous = self._previous_run()
        self.control = ControlServer(socket_path(self.state_dir), self)
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
        self._listen(parts)
        await parts.breakers.startup()
        self.public = PublicServer.for_settings(self, self.settings)
        try:
            await self.public.startup()
        except (OSError, UnicodeError) as exc:  # a host that cannot work: exit 78, not 1
            refused = preflight.bind_error(self.settings, exc)
            if refused is None:
                raise
            raise refused from exc
        self._write_marker()
        kept = await parts.outbox.load()  # first, so no new answer overtakes a kept one
        resumed = await parts.poller.resume()
        self._tasks = [
            asyncio.create_task(parts.poller.pump(), name="journal-pump"),
            asyncio.create_task(parts.outbox.run(), name="outbox-pump"),
            asyncio.create_task(self._prune(), name="retention"),
        ]
        polling = self.settings.telegram_mode == "polling"
        if not polling:
            assert self.settings.webhook_url is not None
            await parts.bot.me()
            await parts.telegram.set_webhook(
                self.settings.webhook_url, secret_token=self.settings.webhook_secret.reveal()
            )
        if parts.redis is not None:  # replicas: the lease elects the poller, claims dedup
            self.replicas = Replicas(parts.redis, snapshot=self._replica_snapshot)
            parts.poller.claims = self.replicas
            replicas = self.replicas
            parts.limiters.share_replicas(lambda: replicas.count)
            task = asyncio.create_task(self.replicas.run(self._on_tick, poll=polling))
            self._tasks.append(task)
        elif polling:
            self._on_lease(True)
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
            self._tasks.append(self._poll_task)
        elif not held and running:
            assert self._poll_task is not None
            self._poll_task.cancel()
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
        (self.state_dir / RUN_MARKER).unlink(missing_ok=True)
        logger.info("stopped: %s", json.dumps({k: report[k] for k in ("result", "exit_code",
                    "duration_s", "hung_step", "kept")}))  # fmt: skip
        if self.control is not None:
            await self.control.aclose()  # waits for the stop streams to send their last line
        return report

    async def _abort(self) -> None:
        """Startup failed: close whatever was opened, quietly."""
        for task in self._tasks:
            task.cancel()
        if self.public is not None:
            await self.public.aclose()
        if self.parts is not None:
            await close_parts(self.parts)
        if self.control is not None:
            await self.control.aclose()

    # -- run marker: how the previous run ended -------------------------------------------------

    def _previous_run(self) -> dict[str, Any] | None:
        data = statedir.read_json(self.state_dir / RUN_MARKER)
        if data is None:
            return read_report(self.state_dir)
        return {"result": "killed", "exit_code": None, "pid": data.get("pid"),
                "started_at": data.get("started_at")}  # fmt: skip

    def _write_marker(self) -> None:
        """run.json says this run is on; previous-run.json keeps how a killed one ended (both
        0600, never written through a symlink)."""
        marker = json.dumps({"pid": os.getpid(), "started_at": self.started_at})
        statedir.write_private(self.state_dir / RUN_MARKER, marker)
        (self.state_dir / REPORT_FILE).unlink(missing_ok=True)
        if self.previous is not None and self.previous.get("result") == "killed":
            previous = json.dumps(self.previous)
            statedir.write_private(self.state_dir / PREVIOUS_RUN_FILE, previous)

    def _listen(self, parts: Parts) -> None:
        publish = self.events.publish
        transitions = ("open", "half_open", "close", "forced", "storage_error", "storage_ok")

        def on_breaker(e: Any) -> None:
            detail = {k: v for k, v in e.detail.items() if isinstance(v, str | int | float | None)}
            publish("breaker", breaker=e.breaker, kind=e.kind, state=e.state, **detail)
            self._tell_state()  # an open breaker makes the worker degraded

        def on_limiter(e: Any) -> None:
            publish("limiter", limiter=e.limiter, kind=e.event, key=str(e.key), seconds=e.seconds)

        def on_outage(e: Any) -> None:
            outage = e.outage
            publish("outage", kind=e.kind, name=outage.name, mode=outage.mode, cause=e.cause)

        for breaker in parts.breakers.values():
            breaker.add_listener(on_breaker, *transitions)
        for limiter in parts.limiters.values():
            limiter.on("dropped", on_limiter)
            limiter.on("halt", on_limiter)
        parts.faults.add_listener(on_outage)

    # -- what the control socket and the public port read ---------------------------------------

    @property
    def backend(self) -> str:
        return "redis" if self.settings.redis_url else "memory"

    @property
    def ready(self) -> bool:
        return self.current_state in ("ready", "degraded")

    @property
    def webhook_secret(self) -> str | None:
        if self.settings.telegram_mode != "webhook":
            return None
        return self.settings.webhook_secret.reveal()

    @property
    def polling(self) -> bool:
        return self._poll_task is not None and not self._poll_task.done()

    def status(self) -> dict[str, Any]:
        return readout.status(self)

    def breakers(self) -> dict[str, Any]:
        return readout.breakers(self)

    def limiters(self) -> dict[str, Any]:
        return readout.limiters(self)

    def outages(self) -> list[dict[str, Any]]:
        return readout.outages(self)

    async def replica_list(self) -> list[dict[str, Any]]:
        return await readout.replica_list(self)

    def _replica_snapshot(self) -> dict[str, Any]:
        return readout.replica_snapshot(self)

    def metrics(self) -> bytes:
        return self._metrics.render()

    def _metrics_source(self) -> dict[str, Any]:
        return readout.metrics_source(self)

    # -- what the control socket writes ---------------------------------------------------------

    async def force_breaker(
        self, name: str, state: str | None, *, reason: str, duration: float | None
    ) -> dict[str, Any]:
        breaker = self._parts().breakers[name]
        if state == "open":
            await breaker.force_open(reason, duration or 300.0)
        elif state == "closed":
            await breaker.force_closed(reason, duration or 300.0)
        else:
            await breaker.reset()
        return breaker.snapshot()

    def start_outage(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec.get("name")
        if name not in DEPENDENCIES:
            raise ValueError(f"'name' must be one of {', '.join(DEPENDENCIES)}")
        options = {k: spec[k] for k in ("probability", "status", "latency") if k in spec}
        mode, duration = str(spec.get("mode", "down")), spec.get("for", DEFAULT_DURATION)
        outage = self._parts().faults.start(name, mode, duration=duration, **options)
        logger.warning("outage started on %s: %s for %gs", name, outage.mode, outage.duration)
        return outage.to_dict()

    def stop_outages(self, name: str | None) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self._parts().faults.stop(name)]

    def event_stream(self) -> AsyncIterator[dict[str, Any]]:
        return self.events.subscribe()

    async def stop_stream(
        self, *, force: bool, deadline: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        shutdown = self._begin_stop(deadline)
        self._stop_requested.set()
        if force:
            shutdown.force()
        async for event in shutdown.follow():
            yield event

    # -- public API -----------------------------------------------------------------------------

    async def chat(self, message: str, *, user: str) -> dict[str, str]:
        """``POST /chat``: the bot's own chain (Anthropic, OpenAI, the fallback text), through
        the ``global`` limiter that guards the public port's work (the seed's middleware);
        ``{"reply", "answered_by"}``."""
        parts = self._parts()
        turns: list[Turn] = [{"role": "user", "content": message}]
        reply = await parts.limiters["global"].schedule(lambda: parts.bot.ask(turns, key=user))
        return {"reply": reply.text, "answered_by": reply.answered_by}

    async def send(self, chat_id: int, text: str) -> dict[str, Any]:
        """``POST /messages``: queued durably, then sent through the outbox (and the
        ``telegram`` limiter); the request itself goes through the ``global`` limiter."""
        return await self._parts().limiters["global"].schedule(lambda: self._send(chat_id, text))

    async def _send(self, chat_id: int, text: str) -> dict[str, Any]:
        parts = self._parts()
        wait = parts.limiters["telegram"].room(chat_id, waiting=parts.outbox.queued_in(chat_id))
        if wait is not None:
            raise JobDroppedError("telegram", chat_id, wait, reason="that chat's queue is full")
        outbox_id = await guard(parts.breakers["database"])(
            lambda: parts.store.enqueue_message(chat_id, text, source="api")
        )
        message = OutboxMessage(outbox_id, chat_id, text, None, None, "api", 0, None, time.time())
        task = asyncio.create_task(parts.outbox.deliver([message]), name=f"send-{outbox_id}")
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
        return {"id": outbox_id}

    async def webhook(self, update: dict[str, Any]) -> None:
        await self._parts().poller.accept(update)

    def _parts(self) -> Parts:
        if self.parts is None:
            raise KhronosError("the worker is still starting; try again in a moment")
        return self.parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m khronos_cli.runtime.worker")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=None)
    options = parser.parse_args(argv)
    try:
        settings = config_module.load(options.config, state_dir=options.state_dir)
        preflight.require_credentials(settings)
    except KhronosError as exc:
        print(f"khronos: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    setup_logging(settings)
    try:
        code = asyncio.run(Worker(settings).serve())
    except KhronosError as exc:
        logger.error("%s", exc)
        code = int(exc.exit_code)
    except OSError as exc:
        logger.error("could not start: %s", exc)
        code = int(ExitCode.FAILURE)
    return code


def exit_now(code: int) -> None:
    """Everything is closed and written: flush the logs and leave without the interpreter's
    teardown (100+ ms of module and object finalization that a stopping bot has no use for)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
