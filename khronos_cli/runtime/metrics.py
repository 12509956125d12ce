"""``GET /metrics``: Prometheus text, drawn from the same snapshots the CLI shows.

A custom collector reads the breaker and limiter snapshots (and the worker's own counters) at
scrape time, so there is one source of truth and no second set of counters to keep in step.

Prometheus's conventions hold: counters end in ``_total`` and their label values are disjoint
(a ``sum()`` over a label counts every event once), ratios are 0 to 1, durations are seconds
(``_seconds``), and ``khronos_build_info`` says which version answers. The metrics (the
README's table says what each means):

- gauges: ``khronos_build_info{version}``, ``khronos_ready``, ``khronos_breaker_state``,
  ``khronos_breaker_error_ratio``, ``khronos_limiter_jobs{state=queued|executing}``,
  ``khronos_limiter_halted``, ``khronos_outbox_messages``, ``khronos_jobs_active``,
  ``khronos_redis_connected`` (with ``redis_url`` only), ``khronos_poller_leader``;
- counters: ``khronos_breaker_calls_total{outcome=success|failure|timeout|reject}``,
  ``khronos_breaker_fallbacks_total``, ``khronos_limiter_jobs_finished_total{outcome=done|
  dropped|failed}``, ``khronos_http_rejected_total{endpoint}``, ``khronos_updates_*_total``,
  ``khronos_messages_*_total``, ``khronos_backups_total{outcome=ok|failed}``;
- backup gauges: ``khronos_backup_last_success_timestamp_seconds``,
  ``khronos_backup_last_size_bytes``, ``khronos_backup_last_duration_seconds`` (0 before one);
- histogram: ``khronos_breaker_call_duration_seconds{breaker}``, the calls that reached the
  dependency (each breaker's window keeps it since start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from khronos_cli import __version__

__all__ = ["Metrics"]

_STATE_VALUE = {"closed": 0, "half-open": 1, "open": 2}
_WORKER_COUNTERS = (
    ("updates_accepted", "Updates journaled and answered."),
    ("updates_duplicate", "Redelivered updates answered only once."),
    ("messages_sent", "Outbox messages Telegram accepted."),
    ("messages_failed", "Outbox messages given up on."),
)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class _Collector(Collector):
    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        data = self.source()
        build = InfoMetricFamily("khronos_build", "The khronos version that answers.")
        build.add_metric([], {"version": __version__})
        yield build
        yield from self._breakers(data.get("breakers", {}), data.get("latency", {}))
        yield from self._limiters(data.get("limiters", {}))
        yield from self._worker(data.get("worker", {}), data.get("rejected", {}))

    def _breakers(self, breakers: dict[str, Any], latency: dict[str, Any]) -> Iterator[Any]:
        state = GaugeMetricFamily(
            "khronos_breaker_state",
            "Breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        ratio = GaugeMetricFamily(
            "khronos_breaker_error_ratio",
            "Share of the rolling window's calls that failed (0 to 1).",
            labels=["breaker"],
        )
        calls = CounterMetricFamily(
            "khronos_breaker_calls",
            "Calls through a breaker by outcome (disjoint: success, failure, timeout, reject).",
            labels=["breaker", "outcome"],
        )
        fallbacks = CounterMetricFamily(
            "khronos_breaker_fallbacks",
            "Times another way served the user after this breaker's call failed or was rejected.",
            labels=["breaker"],
        )
        duration = HistogramMetricFamily(
            "khronos_breaker_call_duration_seconds",
            "Duration of the calls that reached the dependency (successes, failures, timeouts).",
            labels=["breaker"],
        )
        for name, snap in breakers.items():
            stats = snap.get("stats", {})
            state.add_metric([name], _STATE_VALUE.get(snap.get("state"), -1))
            ratio.add_metric([name], _number(stats.get("error_percentage")) / 100.0)
            timeouts = _number(stats.get("timeouts"))
            outcomes = {
                "success": _number(stats.get("successes")),
                "failure": max(0.0, _number(stats.get("failures")) - timeouts),
                "timeout": timeouts,
                "reject": _number(stats.get("rejects")),
            }
            for outcome, count in outcomes.items():
                calls.add_metric([name, outcome], count)
            fallbacks.add_metric([name], _number(stats.get("fallbacks")))
            if name in latency:
                buckets, total = latency[name]
                duration.add_metric(
                    [name],
                    [("+Inf" if b == float("inf") else f"{b:g}", float(c)) for b, c in buckets],
                    sum_value=total,
                )
        yield from (state, ratio, calls, fallbacks, duration)

    def _limiters(self, limiters: dict[str, Any]) -> Iterator[Any]:
        jobs = GaugeMetricFamily(
            "khronos_limiter_jobs",
            "Jobs in a limiter: queued (waiting for a slot) or executing (holding one).",
            labels=["limiter", "state"],
        )
        finished = CounterMetricFamily(
            "khronos_limiter_jobs_finished",
            "Jobs a limiter finished, by outcome (done, dropped, failed).",
            labels=["limiter", "outcome"],
        )
        halted = GaugeMetricFamily(
            "khronos_limiter_halted",
            "1 while an upstream 429 halts every key of the limiter (its retry_after).",
            labels=["limiter"],
        )
        for name, snap in limiters.items():
            jobs.add_metric([name, "queued"], _number(snap.get("queued")))
            holding = _number(snap.get("running")) + _number(snap.get("executing"))
            jobs.add_metric([name, "executing"], holding)
            for outcome in ("done", "dropped", "failed"):
                finished.add_metric([name, outcome], _number(snap.get(outcome)))
            halted.add_metric([name], 1.0 if _number(snap.get("halted_for")) > 0 else 0.0)
        yield from (jobs, finished, halted)

    def _worker(self, worker: dict[str, Any], rejected: dict[str, int]) -> Iterator[Any]:
        refused = CounterMetricFamily(
            "khronos_http_rejected",
            "Requests to the public port refused with a 429 (a full queue) by endpoint.",
            labels=["endpoint"],
        )
        for endpoint in ("/chat", "/messages"):
            refused.add_metric([endpoint], float(rejected.get(endpoint, 0)))
        yield refused
        for key, help_text in _WORKER_COUNTERS:
            counter = CounterMetricFamily(f"khronos_{key}", help_text)
            counter.add_metric([], _number(worker.get(key)))
            yield counter
        gauges = {
            "khronos_outbox_messages": ("Messages in the outbox waiting to be sent.", "queued"),
            "khronos_jobs_active": ("Updates being answered right now.", "jobs"),
            "khronos_ready": ("1 when the worker takes traffic.", "ready"),
            "khronos_poller_leader": ("1 when this worker polls Telegram.", "poller"),
        }
        values = {
            "queued": _number(worker.get("messages_queued")),
            "jobs": _number(worker.get("jobs_active")),
            "ready": 1.0 if worker.get("ready") else 0.0,
            "poller": 1.0 if worker.get("poller") else 0.0,
        }
        for name, (help_text, key) in gauges.items():
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], values[key])
            yield gauge
        yield from _backup(worker.get("backup") or {})
        if worker.get("redis") is not None:
            redis = GaugeMetricFamily("khronos_redis_connected", "1 while Redis answers.")
            redis.add_metric([], 1.0 if worker.get("redis") == "ok" else 0.0)
            yield redis


def _backup(backup: dict[str, Any]) -> Iterator[Any]:
    """The copies of ``khronos.db``: taken and failed, and the last good one."""
    runs = CounterMetricFamily(
        "khronos_backups",
        "Backups of khronos.db by outcome (ok, failed), scheduled or asked for.",
        labels=["outcome"],
    )
    runs.add_metric(["ok"], _number(backup.get("ok")))
    runs.add_metric(["failed"], _number(backup.get("failed")))
    yield runs
    last = backup.get("last_ok") or {}
    gauges = (
        ("last_success_timestamp_seconds", "Unix time the last good backup ended.", "finished_at"),
        ("last_size_bytes", "Size of the last good backup.", "size"),
        ("last_duration_seconds", "How long the last good backup took.", "duration_s"),
    )
    for name, help_text, key in gauges:
        gauge = GaugeMetricFamily(f"khronos_backup_{name}", help_text)
        gauge.add_metric([], _number(last.get(key)))
        yield gauge


class Metrics:
    """Renders the Prometheus text for ``source()`` = ``{"breakers", "limiters", "worker",
    "latency", "rejected"}`` (see :func:`khronos_cli.runtime.readout.metrics_source`)."""

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)
