"""``khronos run``: start the worker, restart it when it crashes, stop it when asked.

One single-threaded select loop watches four things: the worker's output (echoed to our stderr,
the last lines kept for ``status``), its readiness datagrams (sd_notify on a socket of ours, see
``notify.py``), its pidfd (readable when it exits), and a signal wakeup fd (handlers only set
flags). No asyncio, no threads: ``preexec_fn`` stays safe and nothing races the reaper.

Rules (DESIGN.md, Supervisor):

- the worker runs in its own process group (its own session) and dies with us (PDEATHSIG);
- SIGTERM/SIGINT are forwarded to its group; after a requested stop (a signal to us, or the worker
  announcing ``STOPPING=1`` because ``khronos stop`` asked it) we exit with the worker's code;
  SIGHUP (the terminal went away) is a graceful stop too: logged, and forwarded;
- a stop signal while no worker runs (a backoff, a crash loop) ends us at once, exit 0:
  ``khronos stop`` sends one when no worker answers on the control socket;
- ``SIGUSR1`` (``khronos restart``) stops the worker gracefully (SIGTERM) and starts a new one
  at once, without a backoff (state ``restarting`` meanwhile; a stop signal then wins: no new
  worker); in a backoff it starts the next worker now;
- a crash (non-zero exit, or a signal nobody asked for) restarts it after an exponential backoff
  with jitter: 1 s doubling, capped at 60 s, reset once it stayed up 60 s; after 10 fast failures
  the state is ``crashloop`` and retries go on at the cap, never a silent dead end;
- exit code 78 (configuration) is not restarted: we exit 78 too;
- a worker still alive ``kill_after`` seconds after a stop was requested is SIGKILLed (exit 1).

Every transition is written to ``<state-dir>/supervisor.json`` (atomically, 0600, never through a
symlink: see ``statedir``) for ``khronos status``. The state directory is ours or refused
(``statedir.prepare``, exit 78) before anything is written there.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from khronos_cli import statedir
from khronos_cli.alerts.direct import crashloop_text
from khronos_cli.control.instance import RESTART_SIGNAL
from khronos_cli.errors import AlreadyRunningError, ExitCode
from khronos_cli.runtime.notify import notify, parse_notify
from khronos_cli.settings import SupervisorSettings

__all__ = ["Supervisor", "die_with_parent", "read_state"]

_PR_SET_PDEATHSIG = 1


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The supervisor's last written state, or None when there is none."""
    return statedir.read_json(state_dir / statedir.SUPERVISOR_FILE)


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when ``parent`` dies (Linux PDEATHSIG)."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class Supervisor:
    """Supervise ``argv`` (the worker command) with ``state_dir`` as its home.

    ``prepare`` runs once the state dir is locked (so a second instance never gets that far),
    e.g. to start the sandbox; the variables it returns join the worker's environment.
    """

    def __init__(
        self,
        argv: Sequence[str],
        state_dir: Path,
        *,
        settings: SupervisorSettings | None = None,
        jitter: float = 0.1,
        env: dict[str, str] | None = None,
        output: IO[str] | None = None,
        rng: random.Random | None = None,
        keep_lines: int = 20,
        prepare: Callable[[], dict[str, str]] | None = None,
        log_format: str = "text",
        on_crashloop: Callable[[dict[str, str], str], dict[str, str]] | None = None,
    ) -> None:
        self.log_format = log_format
        self.on_crashloop = on_crashloop  # the operator's alert (alerts/direct.py), once a loop
        self._crashloop_told = False
        self.argv = list(argv)
        self.state_dir = state_dir
        self.settings = settings or SupervisorSettings()
        self.jitter = jitter
        self.env = dict(os.environ if env is None else env)
        self.output = output if output is not None else sys.stderr
        self.rng = rng or random.Random()
        self.prepare = prepare
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self.state: dict[str, Any] = {
            "pid": os.getpid(),
            "worker_pid": None,
            "state": "starting",
            "restarts": 0,
            "failures": 0,
            "crashloop_after": self.settings.crashloop_after,
            "started_at": time.time(),
            "worker_started_at": None,
            "last_exit": None,
            "next_start_at": None,
            "last_lines": [],
            "exit_code": None,
        }
        self._signals: list[int] = []
        self._stop_signal: int | None = None
        self._stop_at: float | None = None
        self._worker_stopping = False
        self._killed = False
        self._restarting = False

    # -- entry point ----------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until a requested stop; return the exit code for the process."""
        statedir.prepare(self.state_dir)
        lock = self._lock()
        if self.prepare is not None:
            try:
                self.env.update(self.prepare())
            except BaseException:
                lock.close()
                raise
        notify_path = self.state_dir / statedir.NOTIFY_SOCKET
        listener = self._listen(notify_path)
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_wakeup = signal.set_wakeup_fd(wfd)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, RESTART_SIGNAL)
        handlers = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            code = self._loop(listener, rfd, notify_path)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_wakeup)
            os.close(rfd)
            os.close(wfd)
            listener.close()
            notify_path.unlink(missing_ok=True)
            lock.close()
        self._write(state="stopped", worker_pid=None, exit_code=code, next_start_at=None)
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        """Handlers only record the signal; the loop acts on it."""
        self._signals.append(signum)

    def _lock(self) -> IO[bytes]:
        lock = statedir.append_private(self.state_dir / statedir.LOCK_FILE)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise AlreadyRunningError(str(self.state_dir)) from None
        return lock

    def _listen(self, path: Path) -> socket.socket:
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.setblocking(False)
        return sock

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self, listener: socket.socket, wakeup: int, notify_path: Path) -> int:
        while True:
            worker = self._spawn(notify_path)
            code = self._watch(worker, listener, wakeup)
            if code is not None:
                return code
            if self._restarting:  # asked for: a new worker at once
                self._restarting = False
                continue
            if not self._wait_backoff(wakeup):
                return int(ExitCode.OK)

    def _spawn(self, notify_path: Path) -> subprocess.Popen[bytes]:
        self._worker_stopping = False
        env = {**self.env, "NOTIFY_SOCKET": os.fspath(notify_path), "KHRONOS_SUPERVISED": "1"}
        worker = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),  # safe: this process has one thread
        )
        self._write(
            state="starting",
            worker_pid=worker.pid,
            worker_started_at=time.time(),
            next_start_at=None,
        )
        return worker

    def _watch(
        self, worker: subprocess.Popen[bytes], listener: socket.socket, wakeup: int
    ) -> int | None:
        """Run until the worker exits; the exit code to return, or None to restart it."""
        assert worker.stdout is not None
        pidfd = os.pidfd_open(worker.pid)
        out = worker.stdout.fileno()
        os.set_blocking(out, False)
        partial = b""
        with selectors.DefaultSelector() as selector:
            for fd in (pidfd, out, listener.fileno(), wakeup):
                selector.register(fd, selectors.EVENT_READ)
            exited = False
            while not exited:
                timeout = (
                    None if self._stop_at is None else max(0.0, self._stop_at - time.monotonic())
                )
                for key, _ in selector.select(timeout):
                    if key.fd == out:
                        partial = self._pump(out, partial)
                    elif key.fd == listener.fileno():
                        self._datagrams(listener)
                    elif key.fd == wakeup:
                        self._drain(wakeup)
                        self._forward(worker)
                    elif key.fd == pidfd:
                        exited = True
                if self._stop_at is not None and time.monotonic() >= self._stop_at and not exited:
                    after = self.settings.kill_after
                    self._say(
                        f"worker {worker.pid} still running {after:g}s after the stop request: "
                        "killing it"
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(worker.pid, signal.SIGKILL)
                    self._stop_at = None
                    self._killed = True
        os.close(pidfd)
        self._pump(out, partial, final=True)
        worker.stdout.close()
        returncode = worker.wait()
        return self._after_exit(worker, returncode)

    def _after_exit(self, worker: subprocess.Popen[bytes], returncode: int) -> int | None:
        started = self.state["worker_started_at"] or time.time()
        uptime = time.time() - started
        signum = -returncode if returncode < 0 else None
        code = 128 + signum if signum else returncode
        self._write(
            last_exit={
                "code": code,
                "signal": signum,
                "at": time.time(),
                "uptime_s": round(uptime, 3),
            },
            worker_pid=None,
        )
        requested = self._stop_signal is not None or self._worker_stopping
        if self._restarting and self._stop_signal is None:
            self._killed, self._stop_at = False, None
            self._write(restarts=self.state["restarts"] + 1, state="starting")
            self._say(f"worker {worker.pid} stopped for a restart: starting a new one")
            return None
        if self._killed:
            return int(ExitCode.FAILURE)
        if requested:
            return code if signum is None else int(ExitCode.FAILURE)
        if code == ExitCode.CONFIG:
            self._say("worker refused its configuration (exit 78): not restarting it")
            return int(ExitCode.CONFIG)
        failures = self.state["failures"] + 1 if uptime < self.settings.healthy_after else 1
        self._write(failures=failures)
        self._say(
            f"worker {worker.pid} exited with {self._describe(code, signum)} after "
            f"{uptime:.1f}s: restarting"
        )
        return None

    def _delay(self, failures: int) -> float:
        """``restart_delay`` doubling with each fast failure, capped, with jitter."""
        s = self.settings
        base = min(s.max_restart_delay, s.restart_delay * 2.0 ** max(failures - 1, 0))
        return min(s.max_restart_delay, base * (1 + self.rng.uniform(-self.jitter, self.jitter)))

    def _wait_backoff(self, wakeup: int) -> bool:
        """Sleep the backoff (interruptible by a stop signal); False if a stop was requested."""
        failures = self.state["failures"]
        delay = self._delay(failures)
        state = "crashloop" if failures >= self.settings.crashloop_after else "backoff"
        self._write(
            state=state, next_start_at=time.time() + delay, restarts=self.state["restarts"] + 1
        )
        if state == "crashloop" and self.on_crashloop is not None and not self._crashloop_told:
            self._crashloop_told = True
            last = self.lines[-1] if self.lines else ""
            text = crashloop_text(self.state, last, delay)
            self._write(crashloop_alert=self.on_crashloop(self.env, text))
        deadline = time.monotonic() + delay
        with selectors.DefaultSelector() as selector:
            selector.register(wakeup, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if selector.select(left):
                    self._drain(wakeup)
                    taken = self._take_signal()
                    if taken == "stop":
                        self._say("stop requested while no worker runs: exiting")
                        return False
                    if taken == "restart":
                        self._say("restart requested: starting the worker now")
                        return True
        return True

    # -- pieces ---------------------------------------------------------------------------------

    def _forward(self, worker: subprocess.Popen[bytes]) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == RESTART_SIGNAL:
                if self._stop_signal is None and not self._restarting:
                    self._restarting = True
                    self._stop_at = time.monotonic() + self.settings.kill_after
                    self._write(state="restarting")
                    self._say(f"restart requested: stopping worker {worker.pid} gracefully")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(worker.pid, signal.SIGTERM)
                continue
            if signum == signal.SIGHUP:  # the worker takes it as a graceful stop, as SIGTERM
                self._say("SIGHUP: stopping gracefully")
            if self._stop_signal is None:
                self._stop_signal = signum
                self._stop_at = time.monotonic() + self.settings.kill_after
                self._write(state="stopping")
                notify("STOPPING=1")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signum)

    def _take_signal(self) -> str | None:
        """In a backoff: ``stop`` (any stop signal wins), ``restart``, or None."""
        signals, self._signals = self._signals, []
        stops = [signum for signum in signals if signum != RESTART_SIGNAL]
        if stops:
            self._stop_signal = stops[-1]
            return "stop"
        return "restart" if signals else None

    def _datagrams(self, listener: socket.socket) -> None:
        while True:
            try:
                fields = parse_notify(listener.recv(4096))
            except (BlockingIOError, InterruptedError):
                return
            if fields.get("READY") == "1" and self.state["state"] == "starting":
                self._crashloop_told = False
                self._write(state="ready")
                notify("READY=1")
            if fields.get("STOPPING") == "1" and self._restarting:
                self._write(state="restarting")  # we go on: the service manager need not know
            elif fields.get("STOPPING") == "1":
                self._worker_stopping = True
                self._write(state="stopping")
                notify("STOPPING=1")
            if "STATUS" in fields and fields["STATUS"] in ("ready", "degraded"):
                self._write(state=fields["STATUS"])

    def _pump(self, fd: int, partial: bytes, *, final: bool = False) -> bytes:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            partial += chunk
        *lines, partial = partial.split(b"\n")
        if final and partial:
            lines, partial = [*lines, partial], b""
        for raw in lines:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            self.output.write(line + "\n")
        if lines:
            self.output.flush()
            self.state["last_lines"] = list(self.lines)
        return partial

    def _drain(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(fd, 512):
                pass

    def _say(self, message: str) -> None:
        if self.log_format == "json":  # the worker's shape (runtime/logs.py), one object a line
            now = time.time()
            ts = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1000):03d}Z"
            )
            line = {"ts": ts, "level": "info", "logger": "khronos.supervisor", "message": message}
            self.output.write(json.dumps(line) + "\n")
        else:
            self.output.write(f"khronos supervisor: {message}\n")
        self.output.flush()

    @staticmethod
    def _describe(code: int, signum: int | None) -> str:
        return f"signal {signal.Signals(signum).name}" if signum else f"code {code}"

    def _write(self, **changes: Any) -> None:
        self.state.update(changes)
        self.state["last_lines"] = list(self.lines)
        statedir.write_private(
            self.state_dir / statedir.SUPERVISOR_FILE, json.dumps(self.state, indent=1)
        )
