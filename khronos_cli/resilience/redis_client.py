"""The worker's one Redis client, whatever ``redis_url`` names, and the check it passes at start.

:func:`connect` builds one client for the whole worker (breakers, limiters, replicas share its
pool) from a :class:`~khronos_cli.redis_address.RedisAddress`:

- **one server** (``redis://``, ``rediss://``, ``unix://``): ``redis.asyncio.Redis``;
- **Sentinel** (``redis+sentinel://``): the master the Sentinels name
  (``Sentinel.master_for``); after a failover the pool asks them again, so the client follows
  the new master by itself;
- **Cluster** (``redis+cluster://``): ``redis.asyncio.cluster.RedisCluster``, which follows
  ``MOVED``/``ASK`` redirections and a promoted replica. Every key of one bot carries the bot's
  hash tag (``{<bot id>}``), so each script, ``MGET`` and pipeline of khronos stays on one slot.

Short socket timeouts everywhere: a dead Redis must fail a call fast, never hang the bot.

Commands are packed by hiredis's C packer (:class:`_HiredisPacking`), as redis-py's synchronous
client already does when hiredis is installed; its asyncio client packs in Python, which cost a
limiter decision (nine arguments) 8 µs against 1.6 µs, byte for byte the same command.

:func:`verify` runs once at start. Redis that does not answer is no error here (the worker
starts ``degraded`` and polls alone, as before); Redis that answers but refuses the credentials
(``WRONGPASS``, ``NOAUTH``) or a command or key khronos needs (``NOPERM``, an ACL user short of
a permission) is a configuration error: exit 78, one line, no secret. The probe calls every
command khronos uses, harmlessly, on a key and a channel of the bot's namespace, so the README's
ACL rule is exactly what it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeVar, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedSSLConnection
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    DataError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.utils import HIREDIS_AVAILABLE

from khronos_cli.errors import ConfigError
from khronos_cli.redis_address import parse

__all__ = ["REDIS_ERRORS", "Client", "connect", "verify"]

log = logging.getLogger("khronos.redis")

Client = Redis | RedisCluster
# What a Redis call may raise when Redis is away or moving (a Cluster's own errors are no
# RedisError): callers fall back to local state on any of them.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)
_REFUSALS = ("WRONGPASS", "NOAUTH", "NOPERM", "invalid username-password", "no permissions")


class _SentinelMaster(Redis):
    """The master a Sentinel names; closing it closes the clients of the Sentinels too."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        sentinel, self.sentinels = self.sentinels, None
        for client in sentinel.sentinels if sentinel is not None else ():
            with contextlib.suppress(Exception):
                await client.aclose()


class _HiredisPacking:
    """A connection's ``pack_command`` done by hiredis, as redis-py's synchronous client packs
    (``redis.connection.HiredisRespSerializer``): one C call for the whole command."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # a command name with its subcommand: "SCRIPT LOAD"
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # maybe a bytearray or memoryview, which redis-py sends as bytes
            pass
        args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # what redis-py's encoder raises for a value it cannot send
            raise DataError(str(exc)) from None


_C = TypeVar("_C", bound=AbstractConnection)
_packing: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _packed_by_hiredis(cls: type[_C]) -> type[_C]:
    """``cls`` with hiredis packing (one subclass per connection class, made once)."""
    if not HIREDIS_AVAILABLE or issubclass(cls, _HiredisPacking):
        return cls
    if cls not in _packing:
        _packing[cls] = type(cls.__name__, (_HiredisPacking, cls), {})
    return cast("type[_C]", _packing[cls])


def _pack_by_hiredis(client: Client) -> Client:
    """Make the connections ``client`` opens from now on pack commands with hiredis."""
    if isinstance(client, Redis):
        pool = client.connection_pool
        pool.connection_class = _packed_by_hiredis(pool.connection_class)
        return client
    manager = client.nodes_manager  # the nodes a Cluster knows now, and those it will learn
    kwargs = manager.connection_kwargs
    kwargs["connection_class"] = _packed_by_hiredis(kwargs.get("connection_class", Connection))
    for node in manager.startup_nodes.values():
        node.connection_class = _packed_by_hiredis(node.connection_class)
    return client


def connect(url: str, *, timeout: float = 1.0) -> Client:
    """One client for the topology ``url`` names (checked by config: ValueError otherwise)."""
    return _pack_by_hiredis(_connect(url, timeout))


def _connect(url: str, timeout: float) -> Client:
    address = parse(url)
    # One immediate retry (a pooled connection the server closed, a master that moved), never
    # redis-py's default backoff: the callers have fallbacks and must not wait seconds.
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
    }
    if address.topology == "server" and not address.hosts:  # a unix socket
        return Redis.from_url(url, **common)
    tls: dict[str, Any] = {"ssl": True, **dict(address.tls)} if address.secure else {}
    auth: dict[str, Any] = {"username": address.username, "password": address.password}
    if address.topology == "server":
        host, port = address.hosts[0]
        return Redis(host=host, port=port, db=address.db, **auth, **tls, **common)
    if address.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in address.hosts]
        # The Retry in common sets the Cluster's retries too (redis-py ignores, with a
        # deprecation warning, cluster_error_retry_attempts when a Retry is given).
        return RedisCluster(startup_nodes=nodes, **auth, **tls, **common)
    master_tls = dict(tls)
    if master_tls.pop("ssl", False):
        master_tls["connection_class"] = SentinelManagedSSLConnection
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(address.hosts), sentinel_kwargs={**common, **tls}, **common, **auth, **master_tls
    )
    assert address.master is not None
    master = sentinel.master_for(address.master, redis_class=_SentinelMaster, db=address.db)
    assert isinstance(master, _SentinelMaster)
    master.sentinels = sentinel
    return master


_PROBE = """
redis.call('TIME')
redis.call('SET', KEYS[1], '1', 'PX', 5000)
redis.call('GET', KEYS[1])
redis.call('MGET', KEYS[1], KEYS[1])
redis.call('PEXPIRE', KEYS[1], 5000)
redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'f', '1')
redis.call('HGETALL', KEYS[1])
redis.call('HMGET', KEYS[1], 'f')
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[1], 1, 'm')
redis.call('ZCOUNT', KEYS[1], 0, '+inf')
redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', 0)
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], '[]')
return 1
"""


async def verify(client: Client, namespace: str, *, timeout: float = 3.0) -> bool:
    """Whether Redis answered every command khronos needs; False when it did not answer at all
    (the worker starts degraded). ConfigError when it refused the credentials or a command."""
    key, channel = f"{namespace}:probe", f"{namespace}:probe-events"
    try:
        async with asyncio.timeout(timeout):
            await client.register_script(_PROBE)(keys=[key], args=[channel])
            await client.set(key, "1", nx=True, px=5000)
            await client.get(key)
            await client.mget([key, key])
            await client.expire(key, 5)
            async with client.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                pipe.zadd(key, {"m": 1})
                pipe.zremrangebyscore(key, 0, 0)
                pipe.zcard(key)
                pipe.zrange(key, 0, -1)
                pipe.zrem(key, "m")
                pipe.delete(key)
                await pipe.execute()
            pubsub: Any = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                await pubsub.unsubscribe(channel)
            finally:
                await pubsub.aclose()
    except REDIS_ERRORS as exc:
        if refused(exc):
            raise ConfigError(
                "redis",
                "redis_url",
                None,
                "credentials and an ACL Redis accepts for every command khronos needs "
                f"(README: Redis); Redis answered: {_first_line(exc)}",
                hidden=True,
            ) from None
        log.warning("redis did not answer the start-up check (%s): starting degraded", exc)
        return False
    return True


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing the credentials or a permission (not an outage)."""
    if isinstance(exc, AuthenticationError | NoPermissionError):
        return True
    text = str(exc)
    return isinstance(exc, ResponseError | RedisClusterException) and any(
        word in text for word in _REFUSALS
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
