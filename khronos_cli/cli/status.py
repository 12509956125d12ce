"""``khronos status``: the supervisor's state file and the worker's own view, merged."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from khronos_cli.cli import output
from khronos_cli.cli.options import JSONOption, StateDirOption, client, resolve_state_dir
from khronos_cli.errors import NotRunningError

_STYLE = {"ready": "green", "starting": "cyan", "degraded": "yellow", "stopping": "yellow",
          "backoff": "red", "crashloop": "bold red"}  # fmt: skip


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gather(state_dir: Path) -> dict[str, Any]:
    """What `status --json` prints; raises NotRunningError when nothing runs there."""
    import json

    from khronos_cli.control.protocol import socket_path

    def read(name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((state_dir / name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    supervisor = read("supervisor.json")
    if supervisor and (supervisor.get("state") == "stopped" or not _alive(supervisor.get("pid"))):
        supervisor = None
    worker: dict[str, Any] | None = None
    try:
        with client(state_dir) as control:
            worker = control.get("/status")
    except NotRunningError:
        if supervisor is None:
            raise
    worker = worker or {}
    state = worker.get("state", "starting")
    if supervisor and supervisor.get("state") in ("starting", "backoff", "crashloop", "stopping"):
        state = supervisor["state"]
    started = (supervisor or {}).get("started_at") or worker.get("started_at")
    return {
        "pid": (supervisor or {}).get("pid") or worker.get("pid"),
        "worker_pid": (supervisor or {}).get("worker_pid") or worker.get("pid"),
        "supervised": supervisor is not None,
        "state": state,
        "uptime_s": round(time.time() - started, 1) if started else None,
        "restarts": (supervisor or {}).get("restarts", 0),
        "http_port": worker.get("http_port"),
        "http_host": worker.get("http_host"),
        "socket": str(socket_path(state_dir)),
        "state_dir": str(state_dir),
        "backend": worker.get("backend"),
        "last_shutdown": worker.get("last_shutdown") or read("last-shutdown.json"),
        "last_exit": (supervisor or {}).get("last_exit"),
        "next_start_at": (supervisor or {}).get("next_start_at"),
        "last_lines": (supervisor or {}).get("last_lines", []) if state == "crashloop" else [],
        "worker": worker,
    }


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
def status(state_dir: StateDirOption = None, as_json: JSONOption = False) -> None:
    """Supervisor and worker pids, uptime, restarts, state, ports, backend, last stop."""
    data = gather(resolve_state_dir(state_dir))
    if as_json:
        output.print_json(data)
    else:
        output.stdout.print(render(data))
