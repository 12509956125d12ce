"""``khronos status``: the supervisor's state file and the worker's own view, merged."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from khronos_cli.cli import output
from khronos_cli.cli.options import AllOption, JSONOption, StateDirOption, resolve_state_dir
from khronos_cli.control.state import gather

_STYLE = {"ready": "green", "starting": "cyan", "degraded": "yellow", "stopping": "yellow",
          "backoff": "red", "crashloop": "bold red"}  # fmt: skip


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def render(data: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    state = str(data["state"])
    table.add_row("state", Text(state, _STYLE.get(state, "")))
    pids = f"{data['pid']}" + (f" (worker {data['worker_pid']})" if data["supervised"] else "")
    table.add_row("pid", pids)
    table.add_row("uptime", _duration(data["uptime_s"]))
    table.add_row("restarts", str(data["restarts"]))
    if data["http_port"] is not None:
        table.add_row("http", f"{data.get('http_host') or '127.0.0.1'}:{data['http_port']}")
    table.add_row("socket", data["socket"])
    table.add_row("backend", str(data["backend"] or "—"))
    for reason in data.get("reasons") or []:  # why it is degraded: open breakers, Redis, polling
        table.add_row("why", Text(str(reason), "bold red"))
    last = data.get("last_shutdown") or {}
    if last:
        table.add_row("last stop", f"{last.get('result', '?')} (exit {last.get('exit_code', '?')})")
    if data.get("last_exit"):
        exit_info = data["last_exit"]
        table.add_row(
            "last exit", f"code {exit_info.get('code')} after {exit_info.get('uptime_s')}s"
        )
    for line in data["last_lines"][-10:]:
        table.add_row("", Text(line, "dim"))  # worker output: plain text, never markup
    return table


@output.command
def status(
    state_dir: StateDirOption = None,
    as_json: JSONOption = False,
    every: AllOption = False,
) -> None:
    """Supervisor and worker pids, uptime, restarts, state, ports, backend, last stop."""
    if every:
        from khronos_cli.cli import replicas

        found = replicas.fetch(state_dir)
        if as_json:
            output.print_json({"replicas": found, "totals": replicas.status_totals(found)})
        else:
            output.stdout.print(replicas.render_status(found))
        return
    data = gather(resolve_state_dir(state_dir))
    if as_json:
        output.print_json(data)
    else:
        output.stdout.print(render(data))
