"""Replicas on one Redis: the shared Telegram budget, and how fast a standby takes over polling.

For 1, 2 and 4 worker processes sharing one `redis-server` and one sandbox Telegram (whose flood
control is on and which timestamps every delivery), bulk messages far above Telegram's limits are
queued through each replica's `POST /messages` (spread over many chats). The table gives the
aggregate send rate as a share of the bot's 30 msg/s, the sliding 1 s windows that went over any
limit (30/s for the bot, 1/s per chat), and the 429s Telegram answered. Then the poller is killed
with SIGKILL and the time until a standby polls is measured. The same burst runs with 2 replicas
on a Redis Cluster (3 masters, 3 replicas: `redis+cluster://`), and on a Sentinel-watched master
(`redis+sentinel://`) that is killed with SIGKILL mid-burst: that row gives the time from the
master's death to both replicas `ready` on the promoted replica, and the sends lost.

    .venv/bin/python benchmarks/replicas.py [--messages 900] [--chats 300]

Goals: at least 95 % of 30/s, 0 windows over any limit; failover within a few seconds; after a
Sentinel failover, ready within 5 s of the election and nothing lost.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import redis_server, sandbox, wait_until
from tests.redis_topologies import Cluster as RedisCluster
from tests.redis_topologies import SentinelGroup

LIFTED = """
[limiters.telegram]
max_queued = 100000
"""


def control(state: Path, path: str) -> Any:
    transport = httpx.HTTPTransport(uds=str(state / "khronos.sock"))
    with httpx.Client(transport=transport, base_url="http://khronos", timeout=10) as client:
        return client.get(path).json()


def windows_over(times: list[float], limit: int, width: float = 1.0) -> int:
    """Sliding windows of ``width`` s holding more than ``limit`` arrivals (one per offender)."""
    over = 0
    for i, start in enumerate(times):
        if bisect.bisect_left(times, start + width) - i > limit:
            over += 1
    return over


class Cluster:
    def __init__(self, root: Path, redis_url: str, sandbox_env: dict[str, str]) -> None:
        self.root = root
        self.redis_url = redis_url
        self.env = {**os.environ, **sandbox_env, "KHRONOS_HTTP_PORT": "0"}
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, count: int, name: str = "") -> None:
        for i in range(count):
            state = self.root / f"{name}of{count}-w{i}"
            state.mkdir(mode=0o700)
            (state / "khronos.toml").write_text(f'redis_url = "{self.redis_url}"\n' + LIFTED)
            process = subprocess.Popen(
                [sys.executable, "-m", "khronos_cli.runtime.worker", "--state-dir", str(state)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.workers.append((process, state))
        for _, state in self.workers:
            wait_until(lambda state=state: (state / "run.json").exists())
        wait_until(lambda: sum(bool(control(s, "/status")["poller"]) for _, s in self.live()) == 1)

    def live(self) -> list[tuple[subprocess.Popen[bytes], Path]]:
        return [(p, s) for p, s in self.workers if p.poll() is None]

    def stop(self) -> None:
        for process, _ in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.workers:
            process.wait(timeout=60)
        self.workers.clear()


def send_burst(
    cluster: Cluster,
    admin: httpx.Client,
    messages: int,
    chats: int,
    fault: SentinelGroup | None = None,
) -> dict[str, Any]:
    """Queue the burst; with ``fault``, kill its master once the burst is queued and time the
    replicas' return to ``ready`` (``recovered``: seconds from the kill)."""
    before = admin.get("/_sandbox/stats").json()
    recovered = None
    ports = [control(s, "/status")["http_port"] for _, s in cluster.live()]
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=30) for p in ports]
    try:
        for i in range(messages):  # far above the limits: all queued in well under a second
            clients[i % len(clients)].post(
                "/messages", json={"chat_id": 50_000 + i % chats, "text": f"bulk {i}"}
            )
        total = before["deliveries"] + messages
        if fault is not None:
            killed = time.monotonic()
            fault.fail_over()
            wait_until(
                lambda: all(control(s, "/status")["state"] == "ready" for _, s in cluster.live())
            )
            recovered = time.monotonic() - killed
        wait_until(lambda: admin.get("/_sandbox/stats").json()["deliveries"] >= total, 600)
    finally:
        for client in clients:
            client.close()
    items = admin.get("/_sandbox/deliveries", params={"after": before["deliveries"]}).json()
    times = sorted(d["at"] for d in items["items"])
    per_chat: dict[int, list[float]] = collections.defaultdict(list)
    for d in items["items"]:
        per_chat[d["chat_id"]].append(d["at"])
    after = admin.get("/_sandbox/stats").json()
    return {
        "recovered": recovered,
        "lost": messages - len(times),
        "rate": (len(times) - 1) / (times[-1] - times[0]),
        "over_bot": windows_over(times, 30),
        "over_chat": sum(windows_over(sorted(t), 1) for t in per_chat.values()),
        "flood_429": after["flood_rejections"] - before["flood_rejections"],
    }


def failover(cluster: Cluster) -> float:
    poller = next((p, s) for p, s in cluster.live() if control(s, "/status")["poller"])
    poller[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    poller[0].wait()
    wait_until(lambda: any(control(s, "/status")["poller"] for _, s in cluster.live()), 60)
    return time.monotonic() - killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=900)
    parser.add_argument("--chats", type=int, default=300)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="khronos-bench-replicas-") as tmp:
        root = Path(tmp)
        with redis_server() as redis, sandbox(root) as stand_ins:
            admin = httpx.Client(base_url=stand_ins.telegram, timeout=30)
            for count in (1, 2, 4):
                redis.flushall()
                cluster = Cluster(root, redis.url, stand_ins.env)
                cluster.start(count)
                try:
                    result = send_burst(cluster, admin, options.messages, options.chats)
                    result["failover"] = failover(cluster) if count > 1 else None
                finally:
                    cluster.stop()
                rows.append((str(count), result))
            for label, topology in (
                ("2 on a Cluster", RedisCluster),
                ("2, Sentinel failover", SentinelGroup),
            ):
                servers = topology(root / label.replace(" ", "-").replace(",", "")).start()
                cluster = Cluster(root, servers.url, stand_ins.env)
                cluster.start(2, name=label.split()[-1].lower())
                try:
                    fault = servers if isinstance(servers, SentinelGroup) else None
                    result = send_burst(cluster, admin, options.messages, options.chats, fault)
                    result["failover"] = failover(cluster)
                finally:
                    cluster.stop()
                    servers.stop()
                rows.append((label, result))
            admin.close()
    print(f"\n{options.messages} bulk messages to {options.chats} chats per run; 2-core machine\n")
    print(
        "| replicas | sends/s | share of 30/s | 1 s windows over 30/s | chat windows over 1/s "
        "| 429s | poller failover s | master death to ready s | sends lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, r in rows:
        fail = "—" if r["failover"] is None else f"{r['failover']:.2f}"
        back = "—" if r["recovered"] is None else f"{r['recovered']:.2f}"
        print(
            f"| {count} | {r['rate']:.2f} | {r['rate'] / 30:.1%} | {r['over_bot']} | "
            f"{r['over_chat']} | {r['flood_429']} | {fail} | {back} | {r['lost']} |"
        )
    share = min(r["rate"] / 30 for _, r in rows)
    over = sum(r["over_bot"] + r["over_chat"] for _, r in rows)
    print(
        f"\ngoal: >= 95 % of 30/s: {'met' if share >= 0.95 else 'NOT met'}; 0 windows over: "
        f"{'met' if over == 0 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
