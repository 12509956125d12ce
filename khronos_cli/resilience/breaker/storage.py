"""Where breaker state lives: in the process (default) or in Redis, shared by every replica.

This is pybreaker's ``CircuitBreakerStorage`` contract (state, opened_at, counters) in an async
form, cut to what must really be shared. A breaker always keeps its own *local* copy of the state
and decides every call from it, so the closed path (and a rejection while open) does no I/O with
either storage. The storage is told about transitions and may answer with the shared truth:

* :class:`MemoryBreakerStorage` shares nothing: the breaker's local state is the state.
* :class:`RedisBreakerStorage` keeps one hash per breaker at ``<prefix>:breaker:<name>``
  (``khronos:{bot}:breaker:anthropic-api``; the ``{bot}`` hash tag keeps a bot's keys in one
  Redis Cluster slot) and a probe lease at ``...:probe``. Every transition is one small Lua script
  (trip, hold, probe, close, release, force, reset) that reads the hash, applies the rule, writes it
  back with an expiry, and publishes the new state on ``<prefix>:breaker-events``. Times are Redis
  ``TIME`` milliseconds, so replicas never compare their own clocks; a reply carries *remaining*
  seconds. A background task listens to that channel (and polls as a safety net, default every
  2 s) and pushes each change into the breaker's local cache.
  Half-open: ``SET lease NX PX`` lets exactly one process probe; its lease lapses after the
  breaker's maximum half-open wait, so a dead prober cannot wedge the others.

Rolling-window counts stay per process on purpose: sharing them would cost a round trip per call
(what pybreaker's ``CircuitRedisStorage`` does, 2–3 per call, with races). Any Redis error makes
the storage fail open: the breaker keeps working on its local state and gets ``on_error(exc)``
(it emits a ``storage_error`` event); ``on_error(None)`` reports that Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BreakerStorage", "MemoryBreakerStorage", "RedisBreakerStorage", "SharedState"]

log = logging.getLogger("khronos.breaker")

OnChange = Callable[["SharedState"], None]
OnError = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class SharedState:
    """One breaker's state as the storage knows it. Durations are seconds from *now*."""

    state: str  # pybreaker's vocabulary: "closed", "open", "half-open"
    opened_at: float | None  # unix time
    retry_in: float | None  # open: until the next trial; half-open: until the probe lease lapses
    reason: str
    forced: str | None  # "open" / "closed" while an operator override is active
    forced_reason: str
    forced_expires_in: float | None
    version: int = 0  # Redis ms of the last change (0: never changed); older news is ignored
    granted: bool = False  # probe(): this process holds the probe lease


class BreakerStorage:
    """The contract; the base class is the in-process behaviour (nothing is shared)."""

    kind = "memory"
    shared = False

    def attach(self, name: str, on_change: OnChange, on_error: OnError) -> None:
        """Register a breaker so remote changes and storage errors reach it."""

    async def startup(self) -> None:
        """Start listening for remote changes (no-op in memory)."""

    async def aclose(self) -> None:
        """Stop listening and release connections."""

    async def load(self, name: str) -> SharedState | None:
        return None

    async def trip(self, name: str, reset_after: float, reason: str) -> SharedState | None:
        return None

    async def hold(self, name: str, seconds: float, reason: str) -> SharedState | None:
        return None

    async def probe(self, name: str, lease: float) -> SharedState | None:
        """Ask to run the half-open trial; ``granted`` in the answer says whether we may."""
        return None

    async def close(self, name: str) -> SharedState | None:
        return None

    async def release(self, name: str) -> None:
        """Give the probe lease back without a verdict (the trial was cancelled)."""

    async def force(
        self, name: str, state: str, reason: str, expires_in: float
    ) -> SharedState | None:
        return None

    async def reset(self, name: str) -> SharedState | None:
        return None


class MemoryBreakerStorage(BreakerStorage):
    """State in this process only: the breaker's local state is authoritative."""


_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local raw = redis.call('HGETALL', KEYS[1])
local s = {}
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
local state = s.state or 'closed'
local opened = tonumber(s.opened or '0')
local nxt = tonumber(s.next or '0')
local reason = s.reason or ''
local forced = s.forced or ''
local fexp = tonumber(s.fexp or '0')
local freason = s.freason or ''
local ver = tonumber(s.ver or '0')
local changed = false
if forced ~= '' and fexp <= now then forced = ''; freason = ''; changed = true end
local function save()
  ver = math.max(now, ver + 1)  -- strictly newer, even for two changes in one millisecond
  redis.call('HSET', KEYS[1], 'state', state, 'opened', opened, 'next', nxt, 'reason', reason,
             'forced', forced, 'fexp', fexp, 'freason', freason, 'ver', ver)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + math.max(nxt - now, fexp - now, 0))
end
local function reply(granted, publish)
  local retry = -1
  if state == 'open' then retry = math.max(nxt - now, 0)
  elseif state == 'half-open' then retry = math.max(redis.call('PTTL', KEYS[2]), 0) end
  local fin = -1
  if forced ~= '' then fin = fexp - now end
  local out = {state, opened, retry, reason, forced, fin, freason, ver, granted}
  if publish then
    redis.call('PUBLISH', ARGV[2], cjson.encode({ARGV[1], state, opened, retry, reason, forced,
                                                 fin, freason, ver}))
  end
  return out
end
local function unchanged(granted)
  if changed then save() end
  return reply(granted, changed)
end
"""

# ARGV: 1 name, 2 channel, 3 key ttl ms, 4 lease token, 5.. per script.
_SCRIPTS = {
    "load": "return unchanged(0)",
    "trip": """
if forced == 'closed' or (state == 'open' and nxt > now) then return unchanged(0) end
state = 'open'; opened = now; nxt = now + tonumber(ARGV[5]); reason = ARGV[6]
redis.call('DEL', KEYS[2]); save(); return reply(0, true)
""",
    "hold": """
if forced == 'closed' then return unchanged(0) end
if state ~= 'open' then opened = now end
state = 'open'; nxt = math.max(nxt, now + tonumber(ARGV[5])); reason = ARGV[6]
redis.call('DEL', KEYS[2]); save(); return reply(0, true)
""",
    "probe": """
if forced == 'open' or state == 'closed' then return unchanged(0) end
if state == 'open' then
  if nxt > now then return unchanged(0) end
  state = 'half-open'; changed = true
end
local granted = 0
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5]) then granted = 1
elseif redis.call('GET', KEYS[2]) == ARGV[4] then granted = 1 end
return unchanged(granted)
""",
    "close": """
if forced == 'open' or state == 'closed' or (state == 'open' and nxt > now) then
  return unchanged(0)
end
state = 'closed'; opened = 0; nxt = 0; reason = ''
redis.call('DEL', KEYS[2]); save(); return reply(0, true)
""",
    "release": """
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return unchanged(0)
""",
    "force": """
forced = ARGV[5]; freason = ARGV[6]; fexp = now + tonumber(ARGV[7])
if forced == 'open' then
  if state ~= 'open' then opened = now end
  state = 'open'; nxt = fexp; reason = 'forced open'
else
  state = 'closed'; opened = 0; nxt = 0; reason = ''
end
redis.call('DEL', KEYS[2]); save(); return reply(0, true)
""",
    "reset": """
forced = ''; freason = ''; state = 'closed'; opened = 0; nxt = 0; reason = ''
redis.call('DEL', KEYS[2]); save(); return reply(0, true)
""",
}

_STATES = {"closed": "closed", "open": "open", "half-open": "half-open"}


def _decode(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shared(row: list[Any], granted: bool = False) -> SharedState:
    state, opened, retry, reason, forced, forced_in, forced_reason, version = row[:8]
    state = _STATES.get(_decode(state), "closed")
    forced = _decode(forced)
    return SharedState(
        state=state,
        opened_at=int(opened) / 1000.0 if int(opened) else None,
        retry_in=int(retry) / 1000.0 if int(retry) >= 0 else None,
        reason=_decode(reason),
        forced=forced or None,
        forced_reason=_decode(forced_reason),
        forced_expires_in=int(forced_in) / 1000.0 if forced else None,
        version=int(version),
        granted=granted,
    )


class RedisBreakerStorage(BreakerStorage):
    """Breaker state shared through Redis (``redis.asyncio``); see the module docstring."""

    kind = "redis"
    shared = True

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "khronos:{bot}",
        poll_interval: float = 2.0,
        key_ttl: float = 3600.0,
        op_timeout: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._prefix = prefix
        self._channel = f"{prefix}:breaker-events"
        self._poll_interval = poll_interval
        self._ttl_ms = int(key_ttl * 1000)
        self._op_timeout = op_timeout
        self._token = uuid.uuid4().hex
        self._scripts = {
            op: client.register_script(_PRELUDE + body) for op, body in _SCRIPTS.items()
        }
        self._watchers: dict[str, tuple[OnChange, OnError]] = {}
        self._task: asyncio.Task[None] | None = None
        self._healthy = True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBreakerStorage:
        """A storage with its own client (closed by :meth:`aclose`); short socket timeouts so a
        dead Redis fails calls open quickly instead of hanging them."""
        from khronos_cli.resilience.redis_client import connect

        client = connect(url)
        return cls(client, owns_client=True, **options)

    def key(self, name: str) -> str:
        return f"{self._prefix}:breaker:{name}"

    def attach(self, name: str, on_change: OnChange, on_error: OnError) -> None:
        self._watchers[name] = (on_change, on_error)

    async def startup(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="khronos-breaker-storage")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_client:
            self._owns_client = False  # aclose() may be called again: close once
            await self._client.aclose()

    # -- transitions --------------------------------------------------------------------------

    async def load(self, name: str) -> SharedState | None:
        return await self._run("load", name)

    async def trip(self, name: str, reset_after: float, reason: str) -> SharedState | None:
        return await self._run("trip", name, int(reset_after * 1000), reason)

    async def hold(self, name: str, seconds: float, reason: str) -> SharedState | None:
        return await self._run("hold", name, max(1, int(seconds * 1000)), reason)

    async def probe(self, name: str, lease: float) -> SharedState | None:
        return await self._run("probe", name, max(1, int(lease * 1000)))

    async def close(self, name: str) -> SharedState | None:
        return await self._run("close", name)

    async def release(self, name: str) -> None:
        await self._run("release", name)

    async def force(
        self, name: str, state: str, reason: str, expires_in: float
    ) -> SharedState | None:
        return await self._run("force", name, state, reason, max(1, int(expires_in * 1000)))

    async def reset(self, name: str) -> SharedState | None:
        return await self._run("reset", name)

    async def _run(self, op: str, name: str, *args: object) -> SharedState | None:
        key = self.key(name)
        argv = [name, self._channel, self._ttl_ms, self._token, *args]
        try:
            async with asyncio.timeout(self._op_timeout):
                row = await self._scripts[op](keys=[key, key + ":probe"], args=argv)
        except _redis_errors() as exc:
            self._report(exc)
            return None
        self._report(None)
        return _shared(row, granted=bool(int(row[8])))

    # -- remote changes -----------------------------------------------------------------------

    async def _listen(self) -> None:
        """Subscribe, then hand every published change to its breaker; poll as a safety net."""
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self._poll()
                next_poll = loop.time() + self._poll_interval
                while True:
                    wait = max(0.0, next_poll - loop.time())
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
                    if loop.time() >= next_poll:
                        await self._poll()
                        next_poll = loop.time() + self._poll_interval
            except _redis_errors() as exc:
                self._report(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            # Reconnect pacing after an outage, not a wait for a condition.
            await asyncio.sleep(min(self._poll_interval, 1.0))

    async def _poll(self) -> None:
        for name in list(self._watchers):
            shared = await self._run("load", name)
            if shared is None:
                raise ConnectionError("redis unavailable while polling breaker state")
            watcher = self._watchers.get(name)
            if watcher is not None:
                watcher[0](shared)

    def _deliver(self, data: bytes | str) -> None:
        try:
            row = json.loads(data)
            watcher = self._watchers.get(str(row[0]))
            if watcher is not None:
                watcher[0](_shared(row[1:]))
        except (ValueError, IndexError, TypeError):
            log.warning("ignored a malformed breaker event on %s: %r", self._channel, data)

    def _report(self, exc: BaseException | None) -> None:
        if (exc is None) == self._healthy:
            return
        self._healthy = exc is None
        if exc is not None:
            log.warning("breaker storage: redis unavailable, failing open: %s", exc)
        for _, on_error in list(self._watchers.values()):
            on_error(exc)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from khronos_cli.resilience.redis_client import REDIS_ERRORS

    return REDIS_ERRORS
