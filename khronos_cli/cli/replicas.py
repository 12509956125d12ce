"""``--all``: every replica on the shared Redis, side by side, and the totals.

Each replica publishes ``{status, breakers, limiters}`` about once a second; the local worker
returns the live ones at ``GET /replicas``. :mod:`.reads` fetches them and adds up what adds up
(counts as integers, rates) and how many replicas see each breaker state; this module draws them.
"""

from __future__ import annotations

from typing import Any

from khronos_cli.cli.grid import Group, Table, Text


def _cell(value: Any) -> Text:
    """A value as plain text (never markup); nothing known is a dash, not ``None``."""
    if value is None or value == "":
        return Text("—")
    if isinstance(value, dict):
        return Text(", ".join(f"{count} {key}" for key, count in value.items()) or "—")
    return Text(str(value))


def render_status(data: dict[str, Any]) -> Table | Group:
    """``status --all``: one row per replica, then the totals."""
    table = Table(title="replicas", title_justify="left")
    for column in ("replica", "state", "pid", "poller", "accepted", "sent", "queued", "jobs"):
        table.add_column(column, justify="left" if column in ("replica", "state") else "right")
    table.add_column("redis")
    for replica in data["replicas"]:
        s = replica.get("status", {})
        table.add_row(
            _cell(replica.get("replica")),
            _cell(s.get("state")),
            _cell(s.get("pid")),
            "yes" if s.get("poller") else "no",
            _cell(s.get("updates_accepted", 0)),
            _cell(s.get("messages_sent", 0)),
            _cell(s.get("messages_queued", 0)),
            _cell(s.get("jobs_active", 0)),
            _cell(s.get("redis")),
        )
    totals = data["totals"]
    table.add_section()
    table.add_row(
        Text(f"{totals['replicas']} replicas"),
        _cell(totals.get("states")),
        "",
        _cell(totals["pollers"]),
        _cell(totals["updates_accepted"]),
        _cell(totals["messages_sent"]),
        _cell(totals["messages_queued"]),
        _cell(totals["jobs_active"]),
        "",
    )
    return table


def render_each(
    replicas: list[dict[str, Any]], part: str, render: Any, totals: dict[str, Any]
) -> Table | Group:
    """One table per replica (its own ``render``), then the totals table."""
    tables: list[Table | Text] = []
    for replica in replicas:
        table = render(replica.get(part, {}))
        table.title = f"{table.title} — replica {replica.get('replica')}"
        tables.append(table)
    summary = Table(title=f"{part}: totals", title_justify="left")
    summary.add_column("name")
    for key in next(iter(totals.values()), {}):
        summary.add_column(key, justify="left" if key == "states" else "right")
    for name, values in totals.items():
        summary.add_row(Text(name), *(_cell(v) for v in values.values()))
    return Group(*tables, summary)
