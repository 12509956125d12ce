"""What ``khronos run`` does: the sandbox if asked, then the supervisor (or the worker alone).

The sandbox runs as a process of its own beside the supervisor (see ``sandbox/__main__``), so
its stand-ins — and the updates its Telegram still holds — survive a worker crash, as the real
Telegram would. ``--detach`` starts the same command in a new session, with its output in
``<state-dir>/run.log``, and returns once the worker is ready.

The state directory is checked first (``statedir.prepare``: ours, private, writable, short enough
for the socket; exit 78 otherwise), and the process tree runs with umask 077: every file anyone of
ours creates there (SQLite's too, and the sandbox's) is private to us.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from khronos_cli import config as config_module
from khronos_cli import statedir
from khronos_cli.alerts import direct
from khronos_cli.config import Settings
from khronos_cli.errors import ConfigError, ExitCode, KhronosError
from khronos_cli.runtime.logs import log_file
from khronos_cli.runtime.supervisor import Supervisor, die_with_parent, read_state
from khronos_cli.settings import BackupSettings, LogSettings

__all__ = ["detach", "launch", "worker_args", "worker_argv"]

SANDBOX_SECRETS = ("TELEGRAM_BOT_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
_LOG_HEAD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ +[A-Z]+ +")  # a log line's time and level
PRIVATE_UMASK = 0o077
SANDBOX_BACKUP_INTERVAL = "1m"  # the sandbox shows scheduled backups: one a minute


def worker_args(state_dir: Path, config: Path | None) -> list[str]:
    """The worker's own options."""
    return ["--state-dir", str(state_dir), *(["--config", str(config)] if config else [])]


def worker_argv(state_dir: Path, config: Path | None) -> list[str]:
    """The worker's command line (``python -m khronos_cli.runtime.worker ...``)."""
    return [sys.executable, "-m", "khronos_cli.runtime.worker", *worker_args(state_dir, config)]


@contextlib.contextmanager
def _sandbox(state_dir: Path, users: int, rate: float, log_format: str) -> Iterator[dict[str, str]]:
    """Start the stand-ins (logging in the worker's format); yield the environment the worker
    needs; stop them at the end."""
    info_path = state_dir / statedir.SANDBOX_FILE
    info_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "khronos_cli.sandbox",
            "--state-dir",
            str(state_dir),
            "--users",
            str(users),
            "--rate",
            str(rate),
        ],
        stdin=subprocess.DEVNULL,
        env={**os.environ, "KHRONOS_LOG_FORMAT": log_format},
        start_new_session=True,  # a Ctrl-C is for us to pass on; the stand-ins stop last
        preexec_fn=die_with_parent(os.getpid()),
    )
    try:
        deadline = time.monotonic() + 30
        while not info_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise KhronosError("the sandbox stand-ins did not start; see the lines above")
            time.sleep(0.02)
        env: dict[str, str] = json.loads(info_path.read_text())["env"]
        yield env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def launch(
    state_dir: Path,
    *,
    settings: Settings,
    config: Path | None = None,
    port: int | None = None,
    sandbox: bool = False,
    supervise: bool = True,
    users: int = 5,
    rate: float = 0.5,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run in the foreground until stopped; the process's exit code. ``env`` joins this
    process's environment for the worker (``khronos run``'s options as variables)."""
    os.umask(PRIVATE_UMASK)
    statedir.prepare(state_dir)
    env = {**os.environ, **(env or {})}
    if port is not None:
        env["KHRONOS_HTTP_PORT"] = str(port)
    if not supervise and not settings.log.file:  # a service manager keeps stderr: no copy
        env["KHRONOS_LOG_FILE"] = "none"
    _check_log_file(settings, supervise)
    if sandbox:  # the stand-ins' own token and keys replace the operator's, wherever they are
        for name in SANDBOX_SECRETS:
            env.pop(f"{name}_FILE", None)
        if settings.backup.interval == BackupSettings().interval:  # the file left the default
            env.setdefault("KHRONOS_BACKUP_INTERVAL", SANDBOX_BACKUP_INTERVAL)
    with contextlib.ExitStack() as stack:

        def prepare() -> dict[str, str]:
            if not sandbox:
                return {}
            given = stack.enter_context(_sandbox(state_dir, users, rate, settings.log.format))
            if "KHRONOS_ALERTS_CHAT_IDS" in env:  # the operator's own choice wins
                given = {k: v for k, v in given.items() if k != "KHRONOS_ALERTS_CHAT_IDS"}
            return given

        if supervise:
            argv = worker_argv(state_dir, config)
            return Supervisor(
                argv,
                state_dir,
                env=env,
                prepare=prepare,
                settings=settings.supervisor,
                log_format=settings.log.format,
                on_crashloop=lambda env, text: _crashloop_alert(settings, env, text),
            ).run()
        env.update(prepare())
        from khronos_cli.runtime.worker import main

        return main(worker_args(state_dir, config), env=env)
    return int(ExitCode.FAILURE)  # pragma: no cover - the with block always returns


def _crashloop_alert(settings: Settings, env: Mapping[str, str], text: str) -> dict[str, str]:
    """The supervisor's alert: the settings as the worker reads them (the sandbox's token,
    Telegram and operator chat are in ``env``), then one Bot API call per chat."""
    try:
        current = config_module.load(settings.config_path, env, state_dir=settings.state_dir)
    except KhronosError:
        current = settings
    return direct.tell(current, text) if current.alerts.enabled else {}


def _check_log_file(settings: Settings, supervise: bool) -> None:
    """Refuse (exit 78) a ``[log] file`` the worker could not open, before anything starts."""
    if not supervise and not settings.log.file:
        return
    path = log_file(settings)
    if path is None:
        return
    try:
        statedir.append_private(path).close()
    except (OSError, statedir.StateDirError) as exc:
        source = str(settings.config_path) if settings.config_path else "environment"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        expected = f"a file this user may write ({reason})"
        raise ConfigError(source, "log.file", str(path), expected) from None


def detach(
    argv: list[str],
    state_dir: Path,
    *,
    log: LogSettings | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` (``khronos run`` without ``--detach``) in the background; wait for ready.
    Its output goes to ``run.log`` through a rotating writer of its own (``runtime/runlog``).

    A start that fails leaves nothing running: a worker that exits before it is ready (the
    supervisor goes to ``backoff``), or no readiness within ``timeout``, and the supervisor is
    stopped (SIGTERM, then SIGKILL) before the error says why, with the worker's last line."""
    os.umask(PRIVATE_UMASK)
    statedir.prepare(state_dir)
    log = log or LogSettings()
    run_log = state_dir / statedir.RUN_LOG
    statedir.append_private(run_log).close()  # ours, not a symlink: refused here, not later
    command = [sys.executable, "-m", "khronos_cli.runtime.runlog", str(run_log)]
    command += ["--max-bytes", str(log.max_bytes), "--backups", str(log.backups)]
    writer = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert writer.stdin is not None
    try:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=writer.stdin,
            stderr=writer.stdin,
            start_new_session=True,
        )
    finally:
        writer.stdin.close()  # the run holds the pipe now; the writer ends when it does
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        state = read_state(state_dir) or {}
        if code is not None:
            error = KhronosError(f"khronos exited with code {code} while starting; see {run_log}")
            if code == ExitCode.CONFIG:
                error.exit_code = ExitCode.CONFIG
            raise error
        if state.get("pid") == process.pid:
            if state.get("state") in ("ready", "degraded"):
                return process.pid
            if state.get("state") in ("backoff", "crashloop"):
                _end(process)
                raise KhronosError(
                    f"the worker exited {_exit_text(state)} before it was ready; nothing was "
                    f"left running; see {run_log}"
                )
        time.sleep(0.05)
    _end(process)
    raise KhronosError(
        f"khronos did not become ready in {timeout:g}s; it was stopped; see {run_log}"
    )


def _exit_text(state: dict[str, Any]) -> str:
    last = state.get("last_exit") or {}
    said = f"with code {last.get('code')}" if last.get("code") is not None else "at once"
    lines = [_LOG_HEAD.sub("", str(line)).strip() for line in state.get("last_lines") or []]
    lines = [line for line in lines if line]
    return f"{said} ({lines[-1]})" if lines else said


def _end(process: subprocess.Popen[bytes], grace: float = 45.0) -> None:
    """Stop a supervisor we started (its worker dies with it); SIGKILL after ``grace``."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
