"""``GET /metrics``: Prometheus text, drawn from the same snapshots the CLI shows.

A custom collector reads the breaker and limiter snapshots (and the worker's own counters) at
scrape time, so there is one source of truth and no second set of counters to keep in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_STATE_VALUE = {"closed": 0, "half-open": 1, "open": 2}


class _Collector(Collector):
    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        data = self.source()
        state = GaugeMetricFamily(
            "khronos_breaker_state",
            "Breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        error = GaugeMetricFamily(
            "khronos_breaker_error_percentage", "Error % in the rolling window.", labels=["breaker"]
        )
        calls = CounterMetricFamily(
            "khronos_breaker_calls",
            "Calls through a breaker by outcome.",
            labels=["breaker", "outcome"],
        )
        for name, snap in data.get("breakers", {}).items():
            stats = snap.get("stats", {})
            state.add_metric([name], _STATE_VALUE.get(snap.get("state"), -1))
            error.add_metric([name], float(stats.get("error_percentage") or 0))
            for outcome in ("fires", "successes", "failures", "timeouts", "rejects", "fallbacks"):
                calls.add_metric([name, outcome], float(stats.get(outcome) or 0))
        yield from (state, error, calls)
        jobs = GaugeMetricFamily(
            "khronos_limiter_jobs", "Jobs in a limiter by state.", labels=["limiter", "state"]
        )
        totals = CounterMetricFamily(
            "khronos_limiter_jobs_finished",
            "Finished jobs by outcome.",
            labels=["limiter", "outcome"],
        )
        for name, snap in data.get("limiters", {}).items():
            for key in ("queued", "running", "executing"):
                jobs.add_metric([name, key], float(snap.get(key) or 0))
            for key in ("done", "dropped", "failed"):
                totals.add_metric([name, key], float(snap.get(key) or 0))
        yield from (jobs, totals)
        worker = data.get("worker", {})
        for key, help_text in (
            ("updates_accepted", "Updates journaled and answered."),
            ("updates_duplicate", "Redelivered updates answered only once."),
            ("messages_sent", "Outbox messages Telegram accepted."),
        ):
            counter = CounterMetricFamily(f"khronos_{key}", help_text)
            counter.add_metric([], float(worker.get(key) or 0))
            yield counter
        active = GaugeMetricFamily("khronos_jobs_active", "Updates being answered right now.")
        active.add_metric([], float(worker.get("jobs_active") or 0))
        ready = GaugeMetricFamily("khronos_ready", "1 when the worker takes traffic.")
        ready.add_metric([], 1.0 if worker.get("ready") else 0.0)
        yield from (active, ready)


class Metrics:
    """Renders the Prometheus text for ``source()`` = ``{"breakers", "limiters", "worker"}``."""

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)
