"""``khronos status``: the health summary of one instance, once or live.

State and why (``why`` rows when degraded, ``waiting`` while not ready yet), pids, uptime,
restarts, ports, backend, then what an operator checks next: breakers not closed, active
outages, the outbox backlog, jobs, Redis and the poller lease, how the last run ended; in a crash
loop, the last exit and output lines. An instance that ran and is stopped shows how it ended (and
the command exits 3, as for any command with nothing running).
"""

from __future__ import annotations

from typing import Any

from khronos_cli.cli import output, reads, views
from khronos_cli.cli.options import (
    AllOption,
    IntervalOption,
    JSONOption,
    StateDirOption,
    WatchOption,
    resolve_state_dir,
)
from khronos_cli.errors import NotRunningError


@output.command
def status(
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    every: AllOption = False,
    watch_: WatchOption = False,
    interval: IntervalOption = 1.0,
) -> None:
    """Health summary: state and why, pids, breakers, outages, backlog, jobs, Redis, last stop."""
    directory = resolve_state_dir(state_dir)

    def fetch() -> dict[str, Any]:
        data: dict[str, Any] = reads.read(directory, ("status",), every=every)
        return data

    if every:
        from khronos_cli.cli.replicas import render_status as draw
    else:
        draw = views.status
    if watch_:
        from khronos_cli.cli.watch import watch

        def worker(data: dict[str, Any]) -> Any:
            return None if every else data.get("worker_pid")

        watch(fetch, draw, interval=interval, as_json=as_json, identity=worker)
        return
    data = fetch()
    if as_json:
        output.print_json(data)
    else:
        output.show(draw(data))
    if not every and reads.stopped(data):
        raise NotRunningError(str(data["socket"]))
