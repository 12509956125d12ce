"""The worker's seven shutdown steps (DESIGN.md), as the table :class:`Shutdown` runs.

1. ``http``: readiness is already false; the public port takes no new work (a POST is a 503)
   but stays open, so ``/ready`` answers 503 (not a refused connection) until step 7 closes it.
2. ``telegram``: stop taking updates (the poller, the journal pump). The offset never moved
   past an update that is not journaled, so nothing Telegram forgot is lost.
3. ``jobs`` (wait, 10 s): let the active jobs answer. Past the budget they are cut and their
   updates stay journaled (``kept``, answered on the next start: not a failure).
4. ``outbox`` (wait): the alerts record what they still group; one last try at what is waiting
   to be sent, then stop the limiters.
   What is still unsent (a rate-limited backlog, a chat in flood control) stays in the outbox
   for the next start (``kept``, counted).

Each wait says as it starts what it waits for (``jobs`` running, ``messages`` queued).
5. ``database``: close SQLite. 6. ``redis``: close the breakers' and limiters' storage.
7. ``connections``: close the public port (busy requests get 2 s), then the upstream clients'
   connection pools. The control connection of
   the client that asked for the stop stays open until the final report.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from khronos_cli.runtime.shutdown import Step

if TYPE_CHECKING:
    from khronos_cli.runtime.worker import Worker

__all__ = ["BUDGETS", "seven_steps"]

BUDGETS = {"http": 2.5, "telegram": 2.0, "database": 2.0, "redis": 2.0, "connections": 3.0}


def seven_steps(worker: Worker) -> list[Step]:
    """The table; the waits' budgets come from ``[shutdown]`` (jobs 10 s, outbox 5 s)."""
    budgets = worker.settings.shutdown  # the parts are read as each step runs: a stop that
    # cancelled the start finds only what the start had opened

    async def http() -> dict[str, Any] | None:
        if worker.public is not None:
            worker.public.drain()
        return None

    async def telegram() -> dict[str, Any] | None:
        parts = worker.parts
        tasks = list(worker.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if worker.replicas is not None:  # hand the poller lease over now, not at its expiry
            await worker.replicas.release_lease()
        return {"offset": parts.poller.offset} if parts else None

    async def jobs() -> dict[str, Any] | None:
        parts = worker.parts
        if parts is None:
            return None
        return {"finished": await parts.jobs.wait_idle()}

    async def cut_jobs() -> dict[str, Any] | None:
        parts = worker.parts
        return {"kept_jobs": await parts.jobs.cancel_all()} if parts else None

    async def outbox() -> dict[str, Any] | None:
        parts = worker.parts
        if parts is None:
            return None
        if worker.alerts is not None:  # what the alerts still group is recorded, then sent
            await worker.alerts.aclose()
        with contextlib.suppress(Exception):
            await parts.outbox.flush()
        await parts.limiters.stop(drop_waiting=True)
        await parts.outbox.aclose()
        return {"kept_messages": await parts.outbox.pending()}

    async def kept_messages() -> dict[str, Any] | None:
        parts = worker.parts
        if parts is None:
            return None
        with contextlib.suppress(Exception):
            await parts.limiters.stop(drop_waiting=True)
        await parts.outbox.aclose()
        return {"kept_messages": await parts.outbox.pending()}

    def jobs_running() -> dict[str, Any]:
        parts = worker.parts
        return {"jobs": parts.jobs.active if parts else 0}

    def messages_queued() -> dict[str, Any]:
        parts = worker.parts
        return {"messages": parts.outbox.queued if parts else 0}

    async def database() -> dict[str, Any] | None:
        parts = worker.parts
        if parts is not None:
            await parts.store.aclose()
        return None

    async def redis() -> dict[str, Any] | None:
        parts = worker.parts
        if worker.replicas is not None:
            await worker.replicas.leave()
        if parts is not None:
            await parts.limiters.aclose()
            await parts.breakers.aclose()
            if parts.redis is not None:
                await parts.redis.aclose()
        return {"backend": worker.backend}

    async def connections() -> dict[str, Any] | None:
        parts = worker.parts
        if worker.public is not None:
            await worker.public.aclose()
        if parts is not None:
            await parts.bot.failover.aclose()  # slow LLM calls another provider answered for
            for client in parts.clients:
                await client.aclose()
        return None

    return [
        Step("http", http, BUDGETS["http"]),
        Step("telegram", telegram, BUDGETS["telegram"]),
        Step(
            "jobs", jobs, budgets.jobs_timeout, wait=True, on_cut=cut_jobs, waits_for=jobs_running
        ),
        Step(
            "outbox",
            outbox,
            budgets.outbox_timeout,
            wait=True,
            on_cut=kept_messages,
            waits_for=messages_queued,
        ),
        Step("database", database, BUDGETS["database"]),
        Step("redis", redis, BUDGETS["redis"]),
        Step("connections", connections, BUDGETS["connections"]),
    ]
