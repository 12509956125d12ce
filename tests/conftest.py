"""Shared fixtures: a real ``redis-server`` on a free loopback port, and real khronos instances."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.instance import Instance
from tests.redis_topologies import Cluster, SentinelGroup, TlsServer
from tests.support import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the whole session (started once, killed at the end)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        pytest.fail(
            "redis-server is not installed: run .ci/run or `apt-get install -y redis-server`"
        )
    with tempfile.TemporaryDirectory(prefix="khronos-redis-") as workdir:
        server = RedisServer(binary, Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied (and running) for this test."""
    redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real Redis Cluster for the session: 3 masters, 3 replicas (fault tests may kill one)."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A Cluster of the test's own, for a test that kills a master or moves a slot (the session's
    Cluster would come out of it in a shape that depends on which tests ran before)."""
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    cluster = Cluster(workdir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A master, its replica and three Sentinels for the session."""
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel"))
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A redis-server on a TLS port only, with a CA and certificate made for this session."""
    server = TlsServer(tmp_path_factory.mktemp("tls"))
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    """A running `khronos run --sandbox` (no simulated users; tests push messages themselves)."""
    running = Instance(tmp_path).start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def make_instance(tmp_path: Path) -> Iterator[Any]:
    """A factory for instances with their own config or arguments, all closed at the end."""
    made: list[Instance] = []

    def make(name: str = "a", **options: Any) -> Instance:
        created = Instance(tmp_path / name, **options)
        made.append(created)
        return created

    yield make
    for created in made:
        created.close()
