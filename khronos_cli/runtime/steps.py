"""The worker's seven shutdown steps (DESIGN.md), as the table :class:`Shutdown` runs.

1. ``http``: readiness is already false; stop listening, close idle keep-alive connections,
   let busy requests finish.
2. ``telegram``: stop taking updates (the poller, the journal pump). The offset never moved
   past an update that is not journaled, so nothing Telegram forgot is lost.
3. ``jobs`` (wait, 10 s): let the active jobs answer. Cut, their updates stay journaled.
4. ``outbox`` (wait): one last try at what is waiting to be sent, then stop the limiters.
   What is still unsent stays in the outbox for the next start.
5. ``database``: close SQLite. 6. ``redis``: close the breakers' and limiters' storage.
7. ``connections``: close the upstream clients' connection pools. The control connection of
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

BUDGETS = {"http": 2.5, "telegram": 2.0, "database": 2.0, "redis": 2.0, "connections": 2.0}


def seven_steps(worker: Worker) -> list[Step]:
    """The table; the waits' budgets come from ``[shutdown]`` (jobs 10 s, outbox 5 s)."""
    parts = worker.parts
    budgets = worker.settings.shutdown

    async def http() -> dict[str, Any] | None:
        if worker.public is not None:
            await worker.public.aclose()
        return None

    async def telegram() -> dict[str, Any] | None:
        tasks = list(worker._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if worker.replicas is not None:  # hand the poller lease over now, not at its expiry
            await worker.replicas.release_lease()
        return {"offset": parts.poller.offset} if parts else None

    async def jobs() -> dict[str, Any] | None:
        if parts is None:
            return None
        return {"finished": await parts.jobs.wait_idle()}

    async def cut_jobs() -> dict[str, Any] | None:
        return {"kept_jobs": await parts.jobs.cancel_all()} if parts else None

    async def outbox() -> dict[str, Any] | None:
        if parts is None:
            return None
        with contextlib.suppress(Exception):
            await parts.outbox.flush()
        await parts.limiters.stop(drop_waiting=True)
        await parts.outbox.aclose()
        return {"kept_messages": await parts.outbox.pending()}

    async def kept_messages() -> dict[str, Any] | None:
        if parts is None:
            return None
        with contextlib.suppress(Exception):
            await parts.limiters.stop(drop_waiting=True)
        await parts.outbox.aclose()
        return {"kept_messages": await parts.outbox.pending()}

    async def database() -> dict[str, Any] | None:
        if parts is not None:
            await parts.store.aclose()
        return None

    async def redis() -> dict[str, Any] | None:
        if worker.replicas is not None:
            await worker.replicas.leave()
        if parts is not None:
            await parts.limiters.aclose()
            await parts.breakers.aclose()
            if parts.redis is not None:
                await parts.redis.aclose()
        return {"backend": worker.backend}

    async def connections() -> dict[str, Any] | None:
        if parts is not None:
            await parts.bot.failover.aclose()  # slow LLM calls another provider answered for
            for client in parts.clients:
                await client.aclose()
        return None

    return [
        Step("http", http, BUDGETS["http"]),
        Step("telegram", telegram, BUDGETS["telegram"]),
        Step("jobs", jobs, budgets.jobs_timeout, wait=True, on_cut=cut_jobs),
        Step("outbox", outbox, budgets.outbox_timeout, wait=True, on_cut=kept_messages),
        Step("database", database, BUDGETS["database"]),
        Step("redis", redis, BUDGETS["redis"]),
        Step("connections", connections, BUDGETS["connections"]),
    ]
