"""``khronos restart``: a graceful stop of the worker, then a new worker, under the same supervisor.

The supervisor is asked by signal (``SIGUSR1``, see ``control/instance.py``): it stops the worker
as ``khronos stop`` would (the seven steps, the configured deadline), starts a new one at once,
without a backoff, and keeps its pid, its lock and its restart count (plus one). In a backoff or a
crash loop it starts the next worker now. The command returns once the new worker is ready
(exit 0), or exits 1 when it is not within ``--timeout``. A worker run with ``--no-supervise`` has
no supervisor to start another: its service manager restarts it (exit 1, saying so).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from khronos_cli.cli import options, output
from khronos_cli.cli.options import JSONOption, StateDirOption, resolve_state_dir
from khronos_cli.cli.views import last_stop
from khronos_cli.control import instance
from khronos_cli.control.client import ControlClient
from khronos_cli.control.protocol import MAX_DURATION, socket_path
from khronos_cli.errors import KhronosError, NotRunningError

_READY = ("ready", "degraded")


def _new_worker(directory: Any, old: object, supervisor: int) -> dict[str, Any] | None:
    """The supervisor's state once a worker other than ``old`` is ready, else None."""
    state = instance.read_supervisor(directory) or {}
    if state.get("pid") != supervisor:
        return None
    pid = state.get("worker_pid")
    if pid is None or pid == old or state.get("state") not in _READY:
        return None
    return state


def _last_shutdown(directory: Any) -> dict[str, Any] | None:
    """How the old worker's stop ended, as the new worker read it at its start."""
    try:
        with ControlClient(directory, timeout=5) as control:
            found = control.get("/status").get("last_shutdown")
    except KhronosError:
        return None
    return found if isinstance(found, dict) else None


@output.command
def restart(
    state_dir: StateDirOption = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds to wait for the new worker to be ready (1 to 900)."
        ),
    ] = 90.0,
    as_json: JSONOption = False,
) -> None:
    """Restart the worker: graceful stop, then a new worker, keeping the supervisor."""
    timeout = options.number(timeout, "--timeout", least=1.0, most=MAX_DURATION)
    directory = resolve_state_dir(state_dir)
    supervisor = instance.supervisor_pid(directory)
    if supervisor is None:
        if instance.answers(directory):
            output.fail(
                "this worker runs without a supervisor (--no-supervise): restart it through "
                "its service manager, or `khronos stop` and `khronos run`"
            )
        raise NotRunningError(str(socket_path(directory)))
    before = instance.read_supervisor(directory) or {}
    old = before.get("worker_pid")
    began = time.monotonic()
    instance.signal_supervisor(supervisor, instance.RESTART_SIGNAL)
    if not as_json:
        stopping = f"stopping worker {old} gracefully" if old else "no worker ran"
        output.stderr.print(f"restart asked of supervisor {supervisor}: {stopping}", markup=False)
    deadline = began + timeout
    state = _new_worker(directory, old, supervisor)
    while state is None:
        if not instance.alive(supervisor):
            output.fail(f"the supervisor (pid {supervisor}) exited; see `khronos status`")
        if time.monotonic() >= deadline:
            output.fail(f"no new worker was ready within {timeout:g}s; see `khronos status`")
        time.sleep(0.05)  # polling the supervisor's state file: no event to wait on
        state = _new_worker(directory, old, supervisor)
    stopped = _last_shutdown(directory) if old else None
    result = {
        "result": "restarted",
        "pid": supervisor,
        "old_worker_pid": old,
        "worker_pid": state["worker_pid"],
        "state": state["state"],
        "restarts": state.get("restarts"),
        "duration_s": round(time.monotonic() - began, 3),
        "stop": stopped,
    }
    if as_json:
        output.print_json(result)
        return
    how = f"; the old one's stop: {last_stop(stopped)}" if stopped else ""
    output.stderr.print(
        f"restarted: worker {state['worker_pid']} {state['state']} in "
        f"{result['duration_s']:.2f}s{how}",
        markup=False,
    )
