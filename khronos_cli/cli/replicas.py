"""``--all``: every replica on the shared Redis, side by side, and the totals.

Each replica publishes ``{status, breakers, limiters}`` about once a second; the local worker
returns the live ones at ``GET /replicas``. Totals add up what adds up (counts, rates) and say how
many replicas see each breaker state.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from khronos_cli.cli.options import client

_COUNTED = ("updates_accepted", "updates_duplicate", "messages_sent", "jobs_active")
_LIMITER_SUMS = ("executing", "queued", "running", "done", "dropped", "failed", "rate")


def fetch(state_dir: Any) -> list[dict[str, Any]]:
    with client(state_dir) as control:
        data: list[dict[str, Any]] = control.get("/replicas")
        return sorted(data, key=lambda r: str(r.get("replica")))


def status_totals(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [r.get("status", {}) for r in replicas]
    totals: dict[str, Any] = {key: sum(int(s.get(key) or 0) for s in statuses) for key in _COUNTED}
    totals["replicas"] = len(replicas)
    totals["pollers"] = sum(1 for s in statuses if s.get("poller"))
    totals["states"] = dict(Counter(str(s.get("state")) for s in statuses))
    return totals


def breaker_totals(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({name for r in replicas for name in r.get("breakers", {})})
    totals: dict[str, Any] = {}
    for name in names:
        snaps = [r["breakers"][name] for r in replicas if name in r.get("breakers", {})]
        stats = [s.get("stats", {}) for s in snaps]
        totals[name] = {
            "states": dict(Counter(str(s.get("state")) for s in snaps)),
            **{k: sum(int(x.get(k) or 0) for x in stats)
               for k in ("fires", "successes", "failures", "timeouts", "rejects", "fallbacks")},
        }  # fmt: skip
    return totals


def limiter_totals(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({name for r in replicas for name in r.get("limiters", {})})
    return {
        name: {
            key: round(sum(float(r["limiters"][name].get(key) or 0) for r in replicas
                           if name in r.get("limiters", {})), 3)
            for key in _LIMITER_SUMS
        }
        for name in names
    }  # fmt: skip


def render_status(replicas: list[dict[str, Any]]) -> RenderableType:
    table = Table("replica", "state", "pid", "poller", "accepted", "sent", "jobs", "redis",
                  title="replicas", title_justify="left")  # fmt: skip
    for replica in replicas:
        s = replica.get("status", {})
        table.add_row(
            str(replica.get("replica")), str(s.get("state")), str(s.get("pid")),
            "yes" if s.get("poller") else "", str(s.get("updates_accepted", 0)),
            str(s.get("messages_sent", 0)), str(s.get("jobs_active", 0)), str(s.get("redis")),
        )  # fmt: skip
    totals = status_totals(replicas)
    table.add_section()
    table.add_row(f"{totals['replicas']} replicas", "", "", str(totals["pollers"]),
                  str(totals["updates_accepted"]), str(totals["messages_sent"]),
                  str(totals["jobs_active"]), "")  # fmt: skip
    return table


def render_each(
    replicas: list[dict[str, Any]], part: str, render: Any, totals: dict[str, Any]
) -> RenderableType:
    """One table per replica (its own ``render``), then the totals table."""
    tables: list[RenderableType] = []
    for replica in replicas:
        table = render(replica.get(part, {}))
        table.title = f"{table.title} — replica {replica.get('replica')}"
        tables.append(table)
    summary = Table("name", *next(iter(totals.values()), {}).keys(), title=f"{part}: totals",
                    title_justify="left")  # fmt: skip
    for name, values in totals.items():
        summary.add_row(name, *(str(v) for v in values.values()))
    return Group(*tables, summary)
