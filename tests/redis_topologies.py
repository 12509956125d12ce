"""Real Redis topologies for tests, on free loopback ports: a Cluster (3 masters, 3 replicas), a
master with a replica watched by three Sentinels, a TLS server with certificates made now, and
ACL users. Each process is ours: killed with SIGKILL for fault tests, all killed at the end."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support import free_port, wait_for

__all__ = ["Cluster", "Node", "SentinelGroup", "SentinelNode", "TlsServer", "cli", "redis_binaries"]


def redis_binaries() -> tuple[str, str]:
    server, client = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or client is None:
        raise RuntimeError("redis-server and redis-cli are needed: run .ci/run")
    return server, client


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, both below the kernel's
    ephemeral range (so no outgoing connection takes them meanwhile), in this pytest-xdist
    worker's own share of that range (two workers starting Clusters at once never race for
    one port)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    share = (22768 - 20000) // max(1, workers)
    low = 20000 + share * worker
    for _ in range(200):
        port = random.randrange(low, low + share)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def cli(port: int, *args: str, extra: tuple[str, ...] = ()) -> str:
    """``redis-cli -p port args...``: its output (raises on a non-zero exit)."""
    command = [redis_binaries()[1], "-h", "127.0.0.1", "-p", str(port), *extra, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


class Node:
    """One ``redis-server`` (or Sentinel) process on a loopback port of its own."""

    def __init__(self, workdir: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir / str(self.port)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        base = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        return [redis_binaries()[0], *base, "--save", "", "--appendonly", "no", *self.args]

    def start(self) -> Node:
        log = (self.workdir / "log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log)
        log.close()
        wait_for(self.answers, timeout=15)
        return self

    def answers(self) -> bool:
        with contextlib.suppress(subprocess.SubprocessError):
            return cli(self.port, "PING").strip() == "PONG"
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def info(self, section: str) -> dict[str, str]:
        lines = cli(self.port, "INFO", section).splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)


class Cluster:
    """Three masters and three replicas, made with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-node-timeout", "1000")
        # A replica may take over however long it was cut from its master (a test kills one
        # seconds after the start, maybe before the first sync ended), and that sync starts at
        # once instead of after Redis's 5 s wait for more replicas.
        options += ("--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0")
        self.nodes = [Node(workdir, *options, port=cluster_port()) for _ in range(6)]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        cli(
            self.nodes[0].port,
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        )
        wait_for(self.healthy, timeout=30)
        return self

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def healthy(self) -> bool:
        live = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
        with contextlib.suppress(subprocess.SubprocessError):
            return all("cluster_state:ok" in cli(n.port, "CLUSTER", "INFO") for n in live)
        return False

    def master_of(self, key: str) -> Node:
        node = self.serving(key)
        if node is None:
            raise AssertionError(f"no master serves {key}")
        return node

    def serving(self, key: str) -> Node | None:
        """The live master that says it serves ``key``'s slot (None during a failover)."""
        slot = int(cli(self.live()[0].port, "CLUSTER", "KEYSLOT", key))
        for node in self.live():
            if node.info("replication").get("role") != "master":
                continue
            for line in cli(node.port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" not in fields[2]:
                    continue
                for span in fields[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return node
        return None

    def node_id(self, node: Node) -> str:
        return cli(node.port, "CLUSTER", "MYID").strip()

    def kill_master_of(self, key: str) -> float:
        """SIGKILL the master serving ``key``; block until its replica serves the slot and the
        cluster is ok. When that was seen (``time.monotonic()``)."""
        old = self.master_of(key)
        old.kill()
        wait_for(lambda: self.healthy() and self.serving(key) not in (None, old), timeout=30)
        return time.monotonic()

    def migrate_slot_of(self, key: str) -> float:
        """Move ``key``'s slot, key by key (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE), to
        another master. When the slot's new owner was announced (``time.monotonic()``)."""
        slot = cli(self.live()[0].port, "CLUSTER", "KEYSLOT", key).strip()
        source = self.master_of(key)
        masters = [n for n in self.live() if n.info("replication").get("role") == "master"]
        target = next(n for n in masters if n is not source)
        cli(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        cli(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        while keys := cli(source.port, "CLUSTER", "GETKEYSINSLOT", slot, "10").split():
            for name in keys:  # one at a time: the bot meets ASK redirections meanwhile
                cli(source.port, "MIGRATE", "127.0.0.1", str(target.port), name, "0", "5000")
        for node in masters:
            cli(node.port, "CLUSTER", "SETSLOT", slot, "NODE", self.node_id(target))
        return time.monotonic()

    def restore(self) -> None:
        """Restart killed nodes (each rejoins as a replica); wait until the cluster is ok."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                node.start()
        wait_for(self.healthy, timeout=30)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


class SentinelGroup:
    """A master, its replica, and three Sentinels watching them as ``khronos``."""

    MASTER = "khronos"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.master = Node(workdir)
        self.replica = Node(workdir, "--replicaof", "127.0.0.1", str(self.master.port))
        self.sentinels = [SentinelNode(workdir, self.MASTER, self.master.port) for _ in range(3)]

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica.start()
        wait_for(
            lambda: self.replica.info("replication").get("master_link_status") == "up", timeout=15
        )
        for node in self.sentinels:
            node.start()
        wait_for(lambda: self.known_replicas() >= 1, timeout=20)
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.MASTER}"

    def known_replicas(self) -> int:
        with contextlib.suppress(subprocess.SubprocessError):
            text = cli(self.sentinels[0].port, "SENTINEL", "REPLICAS", self.MASTER)
            return text.count("slave-priority")
        return 0

    def master_port(self) -> int:
        answer = cli(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)
        return int(answer.split()[1])

    def current_master(self) -> Node:
        port = self.master_port()
        return next(n for n in (self.master, self.replica) if n.port == port)

    def fail_over(self) -> float:
        """SIGKILL the master; block until the Sentinels name another. When that was seen
        (``time.monotonic()``); the killed node stays down (:meth:`restore` brings it back)."""
        old = self.current_master()
        old.kill()
        wait_for(lambda: self.master_port() != old.port, timeout=30, interval=0.02)
        return time.monotonic()

    def restore(self) -> None:
        """Restart a killed node: the Sentinels make it the new master's replica, in their time."""
        for node in (self.master, self.replica):
            if node.process is None or node.process.poll() is not None:
                node.start()

    def stop(self) -> None:
        for node in (*self.sentinels, self.replica, self.master):
            node.kill()


class SentinelNode(Node):
    """A ``redis-server --sentinel`` watching one master (quorum 2, down after 1 s)."""

    def __init__(self, workdir: Path, master: str, port: int) -> None:
        super().__init__(workdir)
        self.config = self.workdir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {master} 127.0.0.1 {port} 2\n"
            f"sentinel down-after-milliseconds {master} 1000\n"
            f"sentinel failover-timeout {master} 10000\n"
        )

    def command(self) -> list[str]:
        return [redis_binaries()[0], str(self.config), "--sentinel"]


class TlsServer(Node):
    """A ``redis-server`` on a TLS port only, its certificates made with ``openssl`` now."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        d = self.workdir
        self.ca, key, cert = d / "ca.crt", d / "server.key", d / "server.crt"

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=khronos test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        )
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        )
        self.tls = ("--tls", "--cacert", str(self.ca))
        self.args = (
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(self.ca),
            "--tls-auth-clients",
            "no",
        )

    def command(self) -> list[str]:
        command = super().command()
        return [*command[:1], "--tls-port", str(self.port), "--port", "0", *command[3:]]

    def answers(self) -> bool:
        with contextlib.suppress(subprocess.SubprocessError):
            return cli(self.port, "PING", extra=self.tls).strip() == "PONG"
        return False

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"
