"""khronos on a TLS server and as an ACL user; refused credentials or commands exit 78 (Sentinel
and Cluster: tests/reliability/test_redis_failover.py)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from tests.instance import FAST_CONFIG, Instance
from tests.redis_topologies import Cluster, TlsServer, cli
from tests.reliability.failover import pair
from tests.support import RedisServer, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"


def serves(group: list[Instance], base: int, count: int = 5) -> None:
    """One poller among ``group``; ``count`` messages each answered once."""
    wait_for(lambda: sum(bool(r.status().get("poller")) for r in group) == 1, timeout=30)
    before = group[0].ledger()["sent"]
    for i in range(count):
        group[0].push(base + i, f"topology {i}")

    def answered() -> bool:
        ledger = group[0].ledger()
        return ledger["sent"] == before + count and not ledger["unanswered"]

    wait_for(answered, timeout=60)
    assert group[0].ledger()["duplicates"] == []
    assert all(r.status()["redis"] == "ok" for r in group)


def refused(make_instance: Any, url: str, password: str) -> str:
    """Start one instance on ``url``: it must exit 78; its log, which never holds the password."""
    config = f'redis_url = "{url}"\n' + FAST_CONFIG
    bot = make_instance("refused", config=config).start(ready=False)
    assert bot.wait() == 78
    log = bot.log()
    assert password not in log
    return log


def readme_acl(user: str, password: str) -> list[str]:
    """The README's ACL rule, for ``user`` with ``password``, as redis-cli arguments."""
    line = next(x for x in README.read_text().splitlines() if x.startswith("ACL SETUSER khronos "))
    words = line.split()[3:]
    return ["ACL", "SETUSER", user, *(f">{password}" if w == ">CHANGE-ME" else w for w in words)]


def test_a_tls_server_serves_replicas(make_instance: Any, redis_tls: TlsServer) -> None:
    """rediss:// with the test's own CA (ssl_ca_certs in the query): two replicas serve."""
    serves(pair(make_instance, redis_tls.url), 9000)


def test_an_acl_user_with_the_readme_rule_serves(
    make_instance: Any, redis_url: str, redis_server: RedisServer
) -> None:
    """An ACL user holding exactly the README's rule: two replicas serve, nothing refused."""
    user, password = f"khronos-{secrets.token_hex(3)}", secrets.token_hex(12)
    cli(redis_server.port, *readme_acl(user, password))
    url = redis_url.replace("redis://", f"redis://{user}:{password}@")
    group = pair(make_instance, url)
    serves(group, 9100)
    assert all("NOPERM" not in r.log() and password not in r.log() for r in group)


def test_an_acl_user_with_the_readme_rule_serves_on_a_cluster(
    make_instance: Any, redis_cluster: Cluster
) -> None:
    """The README's rule on every Cluster node: a bot reads the slot map, passes the start-up
    probe and answers through the cluster."""
    user, password = f"khronos-{secrets.token_hex(3)}", secrets.token_hex(12)
    for node in redis_cluster.live():
        cli(node.port, *readme_acl(user, password))
    url = redis_cluster.url.replace("://", f"://{user}:{password}@")
    config = f'redis_url = "{url}"\n' + FAST_CONFIG
    bot = make_instance("cluster-acl", config=config).start()
    bot.push(9150, "through an ACL user on a cluster")
    wait_for(lambda: bot.ledger()["sent"] == 1 and not bot.ledger()["unanswered"], timeout=60)
    assert bot.status()["redis"] == "ok" and "NOPERM" not in bot.log()


def test_an_acl_user_without_evalsha_exits_78(
    make_instance: Any, redis_url: str, redis_server: RedisServer
) -> None:
    """The README's rule minus EVALSHA: exit 78, one line naming redis_url and the command."""
    user, password = f"khronos-{secrets.token_hex(3)}", secrets.token_hex(12)
    cli(redis_server.port, *readme_acl(user, password), "-evalsha")
    log = refused(
        make_instance, redis_url.replace("redis://", f"redis://{user}:{password}@"), password
    )
    assert re.search(
        r"redis_url: expected credentials .*no permissions to run the .evalsha", log
    ), log


def test_a_wrong_password_exits_78(
    make_instance: Any, redis_url: str, redis_server: RedisServer
) -> None:
    """A user whose password is wrong: exit 78 (WRONGPASS), not a degraded start."""
    user = f"khronos-{secrets.token_hex(3)}"
    cli(redis_server.port, *readme_acl(user, secrets.token_hex(12)))
    wrong = secrets.token_hex(12)
    log = refused(make_instance, redis_url.replace("redis://", f"redis://{user}:{wrong}@"), wrong)
    assert re.search(r"redis_url: expected credentials .*(WRONGPASS|invalid username)", log), log
