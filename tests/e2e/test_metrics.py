"""`GET /metrics` from a real worker, read by Prometheus's own parser: names, types and units
follow Prometheus's conventions, and the figures add up."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from khronos_cli import __version__
from tests.instance import FAST_CONFIG, Instance
from tests.support import wait_for


def answered(instance: Instance, count: int) -> bool:
    ledger = instance.ledger()
    return ledger["sent"] == count and not ledger["unanswered"]


def scrape(instance: Instance) -> dict[str, Any]:
    response = instance.public("GET", "/metrics")
    assert response.status_code == 200
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


def test_metrics_follow_prometheus_conventions(make_instance: Any) -> None:
    """Counters end in _total with disjoint outcomes (no `fires` beside its parts), ratios are
    0-1, call latency is a histogram in seconds, one limiter state for held slots, rejected
    enqueues counted, gauges for the outbox backlog, halts, the poller and the build."""
    config = FAST_CONFIG + '[limiters.telegram]\nmax_queued = 2\nrates = ["1/10s"]\n'
    instance: Instance = make_instance(config=config).start()
    for i in range(3):
        instance.push(5000 + i, f"hello {i}")
    wait_for(lambda: answered(instance, 3), timeout=60)
    codes = [
        instance.public("POST", "/messages", json={"chat_id": 77, "text": f"bulk {i}"}).status_code
        for i in range(6)
    ]
    assert 429 in codes, codes

    def settled(name: str) -> int:  # calls through a breaker that reached its dependency
        stats = instance.public("GET", "/breakers/status").json()[name]["stats"]
        return int(stats["successes"] + stats["failures"])

    before = settled("database")
    families = scrape(instance)
    after = settled("database")

    for name, family in families.items():
        assert name.startswith("khronos_"), name
        assert "percent" not in name and not name.endswith("_ms"), name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name

    calls = families["khronos_breaker_calls"]
    assert calls.type == "counter"
    outcomes = {s.labels["outcome"] for s in calls.samples}
    assert outcomes == {"success", "failure", "timeout", "reject"}, outcomes
    database = {
        s.labels["outcome"]: s.value for s in calls.samples if s.labels["breaker"] == "database"
    }
    # Disjoint: a timeout is not also a failure, so the three add up to the calls settled.
    assert before <= database["success"] + database["failure"] + database["timeout"] <= after

    ratios = families["khronos_breaker_error_ratio"]
    assert ratios.type == "gauge" and all(0.0 <= s.value <= 1.0 for s in ratios.samples)

    latency = families["khronos_breaker_call_duration_seconds"]
    assert latency.type == "histogram" and latency.unit in ("", "seconds")
    anthropic = [s for s in latency.samples if s.labels.get("breaker") == "anthropic-api"]
    buckets = [s for s in anthropic if s.name.endswith("_bucket")]
    count = next(s.value for s in anthropic if s.name.endswith("_count"))
    assert count >= 3 and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count
    values = [s.value for s in buckets]
    assert values == sorted(values)  # cumulative

    jobs = families["khronos_limiter_jobs"]
    assert {s.labels["state"] for s in jobs.samples} == {"queued", "executing"}
    rejected = samples(families["khronos_http_rejected"], "khronos_http_rejected_total")
    assert rejected[(("endpoint", "/messages"),)] == codes.count(429)

    for gauge in ("khronos_outbox_messages", "khronos_limiter_halted", "khronos_poller_leader"):
        assert families[gauge].type == "gauge", gauge
    assert samples(families["khronos_poller_leader"]) == {(): 1.0}
    assert samples(families["khronos_outbox_messages"])[()] >= 1  # the 1/10s chat's backlog
    build = families["khronos_build_info"]
    assert build.type == "gauge"
    assert [(s.labels, s.value) for s in build.samples] == [({"version": __version__}, 1.0)]
    assert "khronos_limiter_running" not in families


def test_redis_and_leadership_gauges_follow_the_replicas(
    make_instance: Any, redis_url: str
) -> None:
    """With two replicas on one Redis, each says Redis is connected and exactly one is the
    poller leader; a standby's leader gauge is 0."""
    config = f'redis_url = "{redis_url}"\n' + FAST_CONFIG
    first: Instance = make_instance("r0", config=config, external_sandbox=True).start()
    second: Instance = make_instance(
        "r1", config=config, external_sandbox=True, sandbox_of=first
    ).start()
    group = [first, second]
    wait_for(lambda: sum(bool(r.status().get("poller")) for r in group) == 1, timeout=30)
    scrapes = [scrape(r) for r in group]
    for families in scrapes:
        assert samples(families["khronos_redis_connected"]) == {(): 1.0}
    leaders = sorted(samples(f["khronos_poller_leader"])[()] for f in scrapes)
    assert leaders == [0.0, 1.0]
