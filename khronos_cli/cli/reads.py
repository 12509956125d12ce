"""The read commands' data, computed once: the fast path (:mod:`.fast`) and the Typer commands
print what these functions return, so ``--json`` gives the same bytes either way.

Standard library and the control client only (the fast path imports this without Typer or rich).
The shapes: every collection is an object keyed by name (``outage list`` too, although the socket
answers a list), and a count stays an integer, also in ``--all`` totals; only rates and
percentages are floats. ``--all`` is ``{"replicas": [...], "totals": {...}}``, the replicas in
the order of their ids, each with its ``replica`` id, ``leader`` and the command's own part
(``status``, ``breakers`` or ``limiters``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from khronos_cli.control.client import ControlClient
from khronos_cli.control.state import STOPPED, gather

TYPE_CHECKING = False  # the CLI's fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "COMMANDS",
    "any_open",
    "breaker_totals",
    "keyed",
    "limiter_totals",
    "read",
    "status_totals",
    "stopped",
]

# The read commands: the socket path each asks, and the part of a replica's snapshot --all shows.
COMMANDS: dict[tuple[str, ...], tuple[str, str | None]] = {
    ("status",): ("/status", "status"),
    ("breakers",): ("/breakers", "breakers"),
    ("limiter",): ("/limiters", "limiters"),
    ("outage", "list"): ("/outages", None),
}
_STATUS_SUMS = (
    "updates_accepted",
    "updates_duplicate",
    "messages_sent",
    "messages_queued",
    "jobs_active",
)
_BREAKER_SUMS = ("fires", "successes", "failures", "timeouts", "rejects", "fallbacks")
_LIMITER_SUMS = ("executing", "queued", "done", "dropped", "failed")


def read(state_dir: Path, command: tuple[str, ...], *, every: bool = False) -> Any:
    """What ``khronos COMMAND --json [--all]`` prints for the instance on ``state_dir``."""
    path, part = COMMANDS[command]
    if every and part is not None:
        with ControlClient(state_dir) as control:
            found = replicas(control)
        mine = ("replica", "leader", part)
        each = [{key: value for key, value in r.items() if key in mine} for r in found]
        return {"replicas": each, "totals": TOTALS[part](found)}
    if command == ("status",):
        return gather(state_dir)
    with ControlClient(state_dir) as control:
        data = control.get(path)
    return keyed(data) if isinstance(data, list) else data


def keyed(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A list of named things as an object keyed by their names."""
    return {str(item.get("name")): item for item in items}


def replicas(control: ControlClient) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = control.get("/replicas")
    return sorted(data, key=lambda r: str(r.get("replica")))


def stopped(status: dict[str, Any]) -> bool:
    """Whether a ``status`` summary is of an instance that does not run (the CLI exits 3)."""
    return status.get("state") == STOPPED


def any_open(data: dict[str, Any]) -> bool:
    """Whether any breaker is open: in ``breakers --json``, or on any replica with ``--all``."""
    if "totals" in data and "replicas" in data:
        return any(t.get("states", {}).get("open") for t in data["totals"].values())
    return any(snap.get("state") == "open" for snap in data.values())


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def status_totals(found: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [r.get("status", {}) for r in found]
    totals: dict[str, Any] = {k: sum(_int(s.get(k)) for s in statuses) for k in _STATUS_SUMS}
    totals["replicas"] = len(found)
    totals["pollers"] = sum(1 for s in statuses if s.get("poller"))
    totals["states"] = dict(Counter(str(s.get("state")) for s in statuses))
    return totals


def breaker_totals(found: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({name for r in found for name in r.get("breakers", {})})
    totals: dict[str, Any] = {}
    for name in names:
        snaps = [r["breakers"][name] for r in found if name in r.get("breakers", {})]
        stats = [s.get("stats", {}) for s in snaps]
        totals[name] = {"states": dict(Counter(str(s.get("state")) for s in snaps))}
        totals[name].update({k: sum(_int(x.get(k)) for x in stats) for k in _BREAKER_SUMS})
    return totals


def limiter_totals(found: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({name for r in found for name in r.get("limiters", {})})
    totals: dict[str, Any] = {}
    for name in names:
        snaps = [r["limiters"][name] for r in found if name in r.get("limiters", {})]
        totals[name] = {k: sum(_int(s.get(k)) for s in snaps) for k in _LIMITER_SUMS}
        totals[name]["rate"] = round(sum(float(s.get("rate") or 0) for s in snaps), 3)
    return totals


TOTALS = {"status": status_totals, "breakers": breaker_totals, "limiters": limiter_totals}
