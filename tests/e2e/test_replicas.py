"""Several replicas on one real Redis: one poller by lease, shared dedup, failover, the totals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from typing import Any

import redis

from tests.instance import FAST_CONFIG, Instance, alive
from tests.redis_topologies import cli
from tests.support import RedisServer, wait_for


def replicas(make_instance: Any, redis_url: str, count: int = 2) -> list[Instance]:
    """`count` workers (no supervisor: a SIGKILL is final) sharing one sandbox and one Redis."""
    config = f'redis_url = "{redis_url}"\n' + FAST_CONFIG  # top-level key: before any table
    first = make_instance("r0", config=config, external_sandbox=True, args=("--no-supervise",))
    first.start()
    group = [first]
    for i in range(1, count):
        other = make_instance(
            f"r{i}",
            config=config,
            external_sandbox=True,
            sandbox_of=first,
            args=("--no-supervise",),
        )
        group.append(other.start())
    return group


def pollers(group: list[Instance]) -> list[Instance]:
    return [r for r in group if r.status().get("poller")]


def answered(instance: Instance, count: int) -> bool:
    ledger = instance.ledger()
    return ledger["sent"] == count and not ledger["unanswered"]


def each_answers_its_own(bots: list[Instance], base: int, text: str) -> None:
    """Both bots poll; three users of each are answered exactly once by their own bot."""
    wait_for(lambda: all(bot.status().get("poller") for bot in bots), timeout=30)
    for i, bot in enumerate(bots):
        for n in range(3):
            bot.push(base + 10 * i + n, f"{text} {i} message {n}")
    for bot in bots:
        wait_for(lambda bot=bot: answered(bot, 3), timeout=60)
        assert bot.ledger()["duplicates"] == []


def test_one_poller_and_every_message_answered_once(make_instance: Any, redis_url: str) -> None:
    """Two replicas: exactly one polls (no 409 loop); 20 messages are each answered once."""
    group = replicas(make_instance, redis_url)
    wait_for(lambda: len(pollers(group)) == 1, timeout=30)
    for i in range(20):
        group[0].push(8000 + i, f"replicated {i}")
    wait_for(lambda: answered(group[0], 20), timeout=60)
    assert group[0].ledger()["duplicates"] == []
    stats = group[0].admin.get("/_sandbox/stats").json()
    assert stats["requests"].get("getupdates", 0) > 0
    wait_for(lambda: all(r.status()["replicas"] == 2 for r in group), timeout=15)


def test_the_standby_takes_over_when_the_poller_dies(make_instance: Any, redis_url: str) -> None:
    """SIGKILL of the poller mid-traffic: the standby polls within seconds; after the dead one
    comes back, every message is answered exactly once."""
    group = replicas(make_instance, redis_url)
    wait_for(lambda: len(pollers(group)) == 1, timeout=30)
    poller = pollers(group)[0]
    standby = next(r for r in group if r is not poller)
    poller.llm_mode("anthropic", mode="slow", delay=2.0)
    for i in range(6):
        poller.push(8100 + i, f"in flight {i}")
    wait_for(lambda: poller.status().get("jobs_active", 0) >= 1, timeout=30)
    pid = poller.status()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), timeout=10)
    poller.llm_mode("anthropic", mode="ok")
    wait_for(lambda: standby.status().get("poller"), timeout=20)
    for i in range(4):
        standby.push(8200 + i, f"after failover {i}")
    poller.start()  # the dead replica returns with its journal and answers what it had taken
    wait_for(lambda: answered(standby, 10), timeout=60)
    assert standby.ledger()["duplicates"] == []


def test_a_graceful_stop_hands_the_lease_over(make_instance: Any, redis_url: str) -> None:
    """Stopping the poller releases its lease at step 2: the standby polls at once."""
    group = replicas(make_instance, redis_url)
    wait_for(lambda: len(pollers(group)) == 1, timeout=30)
    poller = pollers(group)[0]
    standby = next(r for r in group if r is not poller)
    poller.signal(signal.SIGTERM)
    assert poller.wait() == 0
    wait_for(lambda: standby.status().get("poller"), timeout=10)
    standby.push(8300, "still here")
    wait_for(lambda: answered(standby, 1), timeout=30)


def test_status_all_and_breakers_all_show_every_replica(make_instance: Any, redis_url: str) -> None:
    """`status --all --json` lists both replicas and the totals; `breakers --all` both tables."""
    group = replicas(make_instance, redis_url)
    wait_for(lambda: len(pollers(group)) == 1, timeout=30)

    def everyone() -> dict[str, Any]:
        data: dict[str, Any] = json.loads(group[0].khronos("status", "--all", "--json").stdout)
        return data

    wait_for(lambda: everyone()["totals"] == {**everyone()["totals"], "replicas": 2, "pollers": 1})
    data = everyone()
    assert {r["status"]["pid"] for r in data["replicas"]} == {r.status()["pid"] for r in group}
    assert data["totals"]["replicas"] == 2 and data["totals"]["pollers"] == 1
    table = group[1].khronos("breakers", "--all")
    assert table.returncode == 0 and table.stdout.count("anthropic-api") == 3  # 2 + totals
    assert "breakers: totals" in table.stdout


def test_redis_lost_means_degraded_not_down(
    make_instance: Any, redis_url: str, redis_server: RedisServer
) -> None:
    """Redis killed mid-traffic: replicas say degraded and keep answering on local limits; when
    Redis returns they rejoin; nothing is lost or answered twice."""
    group = replicas(make_instance, redis_url)
    wait_for(lambda: len(pollers(group)) == 1, timeout=30)
    for i in range(5):
        group[0].push(8400 + i, f"before {i}")
    wait_for(lambda: answered(group[0], 5), timeout=60)
    redis_server.stop()
    try:
        for i in range(5):
            group[0].push(8500 + i, f"without redis {i}")
        wait_for(lambda: any(r.status().get("state") == "degraded" for r in group), timeout=30)
        wait_for(lambda: answered(group[0], 10), timeout=90)
        limiters = [r.khronos("limiter", "--json") for r in group]
        assert any("local limits" in result.stdout for result in limiters)
    finally:
        redis_server.start()
    wait_for(lambda: all(r.status().get("state") == "ready" for r in group), timeout=60)
    wait_for(lambda: len(pollers(group)) == 1, timeout=30)
    for i in range(5):
        group[0].push(8600 + i, f"after {i}")
    wait_for(lambda: answered(group[0], 15), timeout=60)
    assert group[0].ledger()["duplicates"] == []


def test_two_environments_on_one_redis_keep_apart(make_instance: Any, redis_url: str) -> None:
    """Two bots whose configs name different `redis_prefix` values on one Redis database (each
    with its own Telegram) both poll and answer their users: no shared lease, claims or budget."""
    bots = []
    for name in ("staging", "production"):
        config = f'redis_url = "{redis_url}"\nredis_prefix = "{name}"\n' + FAST_CONFIG
        bots.append(make_instance(name, config=config, args=("--no-supervise",)).start())
    each_answers_its_own(bots, 8300, "environment")


def test_two_bots_on_one_redis_keep_their_own_budget_breakers_and_poller(
    make_instance: Any, redis_url: str, redis_server: RedisServer
) -> None:
    """Two tokens (two bots of one stand-in Telegram, as the Bot API serves every token) on one
    Redis database, no prefix: both poll (two leases), each answers its users once, a breaker
    forced open on one is not open on the other, each bot's budget and breakers under its id."""
    config = f'redis_url = "{redis_url}"\n' + FAST_CONFIG
    other = "7000000002:SANDBOXsandboxSANDBOXsandboxSANDBOX"
    stand_in = ("--users", "0", "--other-token", other)
    first = make_instance("bot1", config=config, external_sandbox=True, sandbox_args=stand_in)
    second = make_instance(
        "bot2", config=config, external_sandbox=True, sandbox_of=first, bot="7000000002"
    )
    bots = [first.start(), second.start()]
    each_answers_its_own(bots, 8700, "bot")
    assert bots[0].khronos("breakers", "open", "anthropic-api", "--for", "1m").returncode == 0
    wait_for(lambda: bots[0].status()["breakers"]["anthropic-api"]["state"] == "open")
    assert bots[1].status()["breakers"].get("anthropic-api", {}).get("state", "closed") == "closed"
    keys = cli(redis_server.port, "--scan", "--pattern", "khronos:*").split()
    for bot_id in ("7000000001", "7000000002"):
        mine = [k for k in keys if k.startswith(f"khronos:{{{bot_id}}}:")]
        assert (
            any(":limiter:telegram:" in k for k in mine) and f"khronos:{{{bot_id}}}:poller" in mine
        )
    assert "khronos:{7000000001}:breaker:anthropic-api" in keys  # forced open: bot 1's only
    assert "khronos:{7000000002}:breaker:anthropic-api" not in keys


def test_a_poller_that_loses_the_lease_forgets_its_409(
    make_instance: Any, redis_url: str, redis_server: RedisServer
) -> None:
    """The poller is told 409 (another process polls), then loses the lease (as after a Redis
    failover): as a standby it is ready again, not degraded on a refusal of a poll it no longer
    makes; the other replica polls."""
    group = replicas(make_instance, redis_url)
    wait_for(lambda: len(pollers(group)) == 1, timeout=30)
    poller = pollers(group)[0]
    conflict = {"mode": "errors", "methods": ["getupdates"], "status": 409}
    poller.admin.post("/_sandbox/failure", json=conflict).raise_for_status()
    poller.push(8800, "ends the long poll: the next one meets the 409")
    wait_for(lambda: "polling: Another process" in str(poller.status().get("reasons")))
    cli(redis_server.port, "SET", "khronos:{7000000001}:poller", "intruder", "PX", "1500")
    wait_for(lambda: not poller.status().get("poller"), timeout=10)
    poller.admin.post("/_sandbox/failure", json={"mode": "ok"}).raise_for_status()
    wait_for(lambda: all(r.status().get("state") == "ready" for r in group), timeout=15)
    wait_for(lambda: len(pollers(group)) == 1, timeout=15)


def test_a_restarted_replica_knows_its_claims_by_its_journal(
    make_instance: Any, redis_url: str
) -> None:
    """Killed between journaling and owning an update, a replica comes back and answers it (its
    pending claim carries its journal's id, now owned), as it does one under a claim named by a
    process (before claims carried the journal's id); one another replica owns is done here."""
    (bot,) = replicas(make_instance, redis_url, count=1)
    wait_for(lambda: len(pollers([bot])) == 1, timeout=30)
    bot.llm_mode("anthropic", mode="slow", delay=60.0)
    bot.push(8800, "killed while pending")
    bot.push(8801, "taken by another replica meanwhile")
    bot.push(8802, "claimed under the old process-named claim")
    database = bot.state_dir / "khronos.db"

    def journal() -> dict[int, tuple[int, str]]:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT chat_id, update_id, state FROM updates").fetchall()
        return {chat: (update, state) for chat, update, state in rows}

    wait_for(lambda: bot.status().get("jobs_active", 0) >= 3, timeout=30)
    pid = bot.status()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), timeout=10)
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (journal_id,) = db.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()
    store = redis.Redis.from_url(redis_url)
    keys = {chat: store.keys(f"*:update:{update}")[0] for chat, (update, _) in journal().items()}
    store.set(keys[8800], f"pending:{journal_id}")  # as if killed before owning it
    store.set(keys[8801], "owned:another-journal")  # as if that claim lapsed and was taken
    store.set(keys[8802], "owned:oldhost:4242:abc123")
    bot.llm_mode("anthropic", mode="ok")
    bot.start()
    wait_for(lambda: all(state == "done" for _, state in journal().values()), timeout=60)
    assert store.get(keys[8800]) == store.get(keys[8802]) == f"owned:{journal_id}".encode()
    chats = [d["chat_id"] for d in bot.deliveries()]
    assert chats.count(8800) == 1 and chats.count(8802) == 1 and 8801 not in chats
