"""Several replicas on one Redis: who polls, who owns an update, and what each one looks like.

- **The poller lease.** In polling mode only one replica may call ``getUpdates`` (Telegram answers
  409 otherwise). The lease is a Redis key set with ``NX`` and a short TTL (:data:`LEASE_TTL`,
  1.2 s), renewed every :data:`LEASE_INTERVAL` (0.2 s, six renewals per lease); a standby tries
  to take it as often, so it polls within about 1.2 s of the poller's death
  (``benchmarks/replicas.py`` measures it). A poller that misses its renewals stops polling
  before a standby can start, and Telegram ends an older ``getUpdates`` when a newer one
  arrives, so two never poll together. A graceful stop releases the lease at step 2, so the
  hand-over is immediate. While Redis is unreachable the poller keeps polling and a standby
  stays put: each knows who polled last.
- **Redis unreachable at start.** A replica that has never reached Redis cannot know whether
  another one holds the lease. It waits one lease (any lease held by a replica that lost Redis
  too has lapsed by then), then polls **alone**: its claims fall back to its own journal's
  dedup. Telegram is the arbiter Redis cannot be: should another process poll the same token
  (Telegram answers 409 "terminated by other getUpdates request"), the lone replica stands down
  and waits for Redis (:meth:`Replicas.stand_down`). When Redis answers it takes the lease like
  any replica, or hands over to the holder.
- **Update claims.** Each replica journals into its own SQLite, so the dedup of an update that two
  replicas fetched (the poller died before Telegram confirmed it) must be shared: a replica claims
  an update id (``pending``) before journaling it and marks it ``owned`` once journaled. Another
  replica that meets an owned id skips it (and may confirm it to Telegram); one that meets a pending
  id must not confirm it yet — the claimant may die before journaling — so it backs off until the
  short pending claim is owned or lapses. A claim carries the journal's own id
  (``Store.journal_id``, kept in the file), not the process's: a replica killed between journaling
  an update and owning it comes back with the same journal, knows the claim as its own and answers
  the update while the other replica still waits; one its journal holds that another replica owns
  is done here (answered there).
- **Snapshots.** Every second each replica publishes its status, breakers and limiters under a key
  that expires, for ``khronos status --all`` and friends; the live count is what the limiters
  divide a shared budget by when Redis goes away.

Keys live under the bot's namespace (``Settings.redis_namespace``: ``khronos:{<bot id>}``, with
the bot id as a Redis Cluster hash tag, so a bot's keys share one slot and two bots on one Redis
never share a lease, a claim or a budget), and every key expires. Redis errors never crash the
worker: it says ``degraded`` and keeps going on what it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from khronos_cli.resilience.redis_client import REDIS_ERRORS, Client

__all__ = ["Replicas"]

logger = logging.getLogger("khronos.replicas")

LEASE_TTL = 1.2  # seconds: the poller lease, and so about the longest a dead poller leaves none
LEASE_INTERVAL = 0.2  # seconds between renewals (or, for a standby, attempts to take it)
PENDING_TTL_MS = 30_000  # a claim not journaled within this lapses (its replica died first)
OWNED_TTL_S = 48 * 3600  # longer than the 24 h Telegram keeps updates

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_CLAIM = """
if redis.call('SET', KEYS[1], 'pending:' .. ARGV[1], 'NX', 'PX', ARGV[2]) then return 'mine' end
local holder = redis.call('GET', KEYS[1])
if holder == 'pending:' .. ARGV[1] or holder == 'owned:' .. ARGV[1] then return 'mine' end
if holder and string.sub(holder, 1, 6) == 'owned:' then return 'owned' end
return 'pending'
"""
# An update this replica's journal holds (journaled before a restart): owned here at once unless
# another journal owns it or is taking it. A claim named by a process (``host:pid:hex``, before
# claims carried the journal's id) can only be this journal's: another replica journals an update
# only under a claim of its own, so it is taken over too.
_RECLAIM = """
local holder = redis.call('GET', KEYS[1])
local mine = not holder or holder == 'pending:' .. ARGV[1] or holder == 'owned:' .. ARGV[1]
    or string.find(string.gsub(holder, '^%a+:', ''), ':', 1, true)
if mine then
    redis.call('SET', KEYS[1], 'owned:' .. ARGV[1], 'EX', ARGV[2])
    return 'mine'
end
if string.sub(holder, 1, 6) == 'owned:' then return 'owned' end
return 'pending'
"""


class Replicas:
    """This process's place among the replicas sharing ``redis``."""

    def __init__(
        self,
        redis: Client,
        *,
        claimant: str,
        bot: str = "bot",
        namespace: str | None = None,
        lease_ttl: float = LEASE_TTL,
        lease_interval: float = LEASE_INTERVAL,
        interval: float = 1.0,
        snapshot: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.redis = redis
        self.prefix = namespace or f"khronos:{{{bot}}}"
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.claimant = claimant  # the journal's id (Store.journal_id): claims outlive the process
        self.lease_ttl = lease_ttl
        self.lease_interval = lease_interval
        self.interval = interval
        self.snapshot = snapshot
        self.healthy = True
        self.count = 1  # live replicas last seen (at least this one)
        self.leader = False
        self.lease_changes = 0
        self.reached = False  # Redis answered since this replica started
        self.alone = False  # polling without the lease: Redis unreachable since the start
        self._stood_down = False  # another process polls: no polling alone until Redis answers
        self._started = time.monotonic()
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._claim = redis.register_script(_CLAIM)
        self._reclaim = redis.register_script(_RECLAIM)

    def key(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    # -- the poller lease -----------------------------------------------------------------------

    async def hold_lease(self) -> bool:
        """Take or renew the poller lease; whether this replica is the poller now."""
        key, ttl = self.key("poller"), int(self.lease_ttl * 1000)
        try:
            if self.leader:
                held = bool(await self._renew(keys=[key], args=[self.id, ttl]))
            else:
                held = bool(await self.redis.set(key, self.id, nx=True, px=ttl))
        except REDIS_ERRORS as exc:
            self._lost(exc)
            return self.leader or self._poll_alone()  # the poller keeps polling, standbys wait
        self._ok()
        if self.alone:
            logger.info(
                "redis answers: the lone poller %s the lease", "takes" if held else "hands over"
            )
        self.reached, self.alone, self._stood_down = True, False, False
        if held != self.leader:
            self.lease_changes += 1
            logger.info("poller lease %s (replica %s)", "taken" if held else "lost", self.id)
        self.leader = held
        return held

    def _poll_alone(self) -> bool:
        """Redis has not answered since the start: poll alone once a lease would have lapsed."""
        if self.reached or self._stood_down:
            return False
        if not self.alone and time.monotonic() - self._started >= self.lease_ttl:
            logger.warning(
                "redis unreachable since the start (%gs): polling alone on local limits, "
                "deduplicating with the local journal, until redis answers",
                self.lease_ttl,
            )
            self.alone = True
        return self.alone

    def stand_down(self) -> None:
        """Another process polls the same token (Telegram's 409): stop polling alone, and wait
        for Redis to elect the poller."""
        if self.alone:
            logger.warning("another process polls this bot's token: the lone poller stands down")
        self.alone, self._stood_down = False, True

    async def release_lease(self) -> None:
        if not self.leader:
            return
        self.leader = False
        try:
            await self._release(keys=[self.key("poller")], args=[self.id])
        except REDIS_ERRORS as exc:
            self._lost(exc)

    # -- update claims --------------------------------------------------------------------------

    async def claim(self, update_id: int) -> str:
        """``mine``: journal it; ``owned``: another replica has it; ``pending``: wait."""
        return await self._verdict(self._claim, update_id, PENDING_TTL_MS)

    async def reclaim(self, update_id: int) -> str:
        """For an update this replica's journal already holds: ``mine`` (now owned here),
        ``owned`` (another replica journaled it too and answers it) or ``pending`` (wait)."""
        return await self._verdict(self._reclaim, update_id, OWNED_TTL_S)

    async def _verdict(self, script: Any, update_id: int, ttl: int) -> str:
        try:
            verdict = await script(keys=[self.key("update", update_id)], args=[self.claimant, ttl])
        except REDIS_ERRORS as exc:
            self._lost(exc)
            return "mine"  # degraded: the local journal's dedup is all there is
        self._ok()
        text = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        return "owned" if text == "owned" else "pending" if text == "pending" else "mine"

    async def own(self, update_id: int) -> None:
        """The update is journaled here: keep the claim for as long as Telegram could resend."""
        try:
            owner = f"owned:{self.claimant}"
            await self.redis.set(self.key("update", update_id), owner, ex=OWNED_TTL_S)
        except REDIS_ERRORS as exc:
            self._lost(exc)

    # -- snapshots ------------------------------------------------------------------------------

    async def publish(self) -> None:
        """Publish this replica's snapshot and count the live ones."""
        now = time.time()
        data = {**self.snapshot(), "replica": self.id, "leader": self.leader, "published_at": now}
        index = self.key("replicas")
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(
                    self.key("replica", self.id),
                    json.dumps(data, default=str),
                    ex=max(2, int(self.interval * 5)),
                )
                pipe.zadd(index, {self.id: now})
                pipe.zremrangebyscore(index, 0, now - self.interval * 5)
                pipe.expire(index, max(2, int(self.interval * 10)))
                pipe.zcard(index)
                results = await pipe.execute()
        except REDIS_ERRORS as exc:
            self._lost(exc)
            return
        self._ok()
        self.count = max(1, int(results[-1]))

    async def all(self) -> list[dict[str, Any]]:
        """Every live replica's last snapshot (this one included)."""
        ids = await self.redis.zrange(self.key("replicas"), 0, -1)
        if not ids:
            return []
        keys = [self.key("replica", i.decode() if isinstance(i, bytes) else i) for i in ids]
        raw = await self.redis.mget(keys)
        return [json.loads(item) for item in raw if item]

    async def leave(self) -> None:
        try:
            await self.redis.zrem(self.key("replicas"), self.id)
            await self.redis.delete(self.key("replica", self.id))
        except REDIS_ERRORS as exc:
            self._lost(exc)

    async def run(self, on_tick: Callable[[bool | None], object], *, poll: bool = True) -> None:
        """Until cancelled: publish every ``interval``; hold the poller lease (when ``poll``)
        every ``lease_interval`` and tell ``on_tick`` whether this replica is the poller (None:
        no lease to hold)."""
        published = -float("inf")
        while True:
            if time.monotonic() - published >= self.interval:
                published = time.monotonic()
                await self.publish()
            on_tick(await self.hold_lease() if poll else None)
            # The lease's renewal period, not a wait for a condition.
            await asyncio.sleep(self.lease_interval if poll else self.interval)

    # -- health -----------------------------------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        if self.healthy:
            logger.warning("redis unreachable (%s): working on local state", exc)
        self.healthy = False

    def _ok(self) -> None:
        if not self.healthy:
            logger.info("redis is back: rejoining the replicas")
        self.healthy = True
