"""The worker's Redis client on every topology packs commands with hiredis, byte for byte as
redis-py packs them, and refuses what redis-py refuses."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from khronos_cli.resilience.redis_client import connect

COMMANDS: list[tuple[Any, ...]] = [
    ("PING",),
    ("SCRIPT LOAD", "return 1"),
    (b"CONFIG GET", b"maxmemory"),
    ("EVALSHA", b"a" * 40, b"2", b"k:{bot}:1", "k:{bot}:é", b"\x00\x01\xff", 7, -3, 0.1, 1.5e300),
    ("SET", "khronos:{bot}:large", b"x" * 10_000),  # redis-py's own packer sends three chunks
    ("SET", bytearray(b"khronos:{bot}:view"), memoryview(b"\x00\xff")),
]
URLS = [
    "redis://127.0.0.1:1/0",
    "rediss://127.0.0.1:1/0",
    "unix:///tmp/khronos-nowhere.sock",
    "redis+sentinel://127.0.0.1:1/mymaster",
    "redis+cluster://127.0.0.1:1",
]


def connection_of(client: Any) -> Any:
    """A connection as ``client`` would open one (no server is reached)."""
    if isinstance(client, Redis):
        return client.connection_pool.make_connection()
    node = next(iter(client.nodes_manager.startup_nodes.values()))
    return node.connection_class(**node.connection_kwargs)


@pytest.mark.parametrize("url", URLS)
async def test_every_topology_packs_with_hiredis_as_redis_py_does(url: str) -> None:
    """Each command is one chunk holding redis-py's own packing; a None is a DataError."""
    client = connect(url)
    try:
        connection = connection_of(client)
        reference = Connection()
        for command in COMMANDS:
            packed = connection.pack_command(*command)
            assert packed == [b"".join(reference.pack_command(*command))]
        with pytest.raises(DataError):
            connection.pack_command("SET", "key", None)
    finally:
        await client.aclose()


async def test_a_packed_command_round_trips(redis_url: str) -> None:
    """Values packed by hiredis reach Redis intact."""
    client = connect(redis_url)
    try:
        await client.execute_command("SET", "khronos:{bot}:packed", "é\x00ü")
        assert await client.get("khronos:{bot}:packed") == "é\x00ü".encode()
        await client.delete("khronos:{bot}:packed")
    finally:
        await client.aclose()
