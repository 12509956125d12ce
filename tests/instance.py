"""A real khronos instance for tests: ``khronos run --sandbox`` as a subprocess, its control
socket, its sandbox's admin port, and how to wait for it and stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from khronos_cli.control.client import ControlClient
from khronos_cli.errors import KhronosError
from tests.support import wait_for

# Short timeouts so that breakers trip and heal within a test's patience.
FAST_CONFIG = """
[breakers.anthropic-api]
timeout = "1s"
reset_timeout = "1s"
volume_threshold = 3
health_check_interval = "0.5s"
[breakers.openai-api]
timeout = "1s"
reset_timeout = "1s"
volume_threshold = 3
[breakers.telegram-api]
timeout = "3s"
"""


class Instance:
    """One `khronos run --sandbox` process (supervisor + worker + sandbox) and its state dir."""

    def __init__(
        self,
        root: Path,
        *,
        config: str = FAST_CONFIG,
        args: tuple[str, ...] = (),
        port: int = 0,
        external_sandbox: bool = False,
        sandbox_of: Instance | None = None,
        sandbox_args: tuple[str, ...] = ("--users", "0"),
        operator_chat: bool = False,
        bot: str | None = None,
    ) -> None:
        self.operator_chat = operator_chat  # alerts to the sandbox's operator chat (else none)
        self.root = root
        self.sandbox_of = sandbox_of  # share another instance's external sandbox (replicas)
        self.bot = bot  # with sandbox_of: another bot (by id) of that stand-in Telegram
        self.admin_path = "/_sandbox" if bot is None else f"/_sandbox/bot{bot}"
        self.external_sandbox = external_sandbox
        self.sandbox_args = sandbox_args  # `python -m khronos_cli.sandbox` options (external)
        self.sandbox_process: subprocess.Popen[bytes] | None = None
        self.state_dir = root / "state"
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.state_dir / "khronos.toml").write_text(config)
        self.log_path = root / "run.log"
        self.args = args
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: httpx.Client | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, *, ready: bool = True) -> Instance:
        """`khronos run --sandbox`; with an external sandbox, `khronos run` against one that
        outlives it (so a test can stop and start the bot and keep the stand-in's ledger)."""
        if self.process is not None:  # a previous run of this instance: reap it first
            self.process.wait(timeout=60)
        log = self.log_path.open("ab")
        env = dict(os.environ)
        if self.external_sandbox:
            env.update(self._sandbox_env(log))
            mode = []
        else:
            mode = ["--sandbox", "--users", "0"]
        if not self.operator_chat:
            env["KHRONOS_ALERTS_CHAT_IDS"] = "none"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "khronos_cli",
                "run",
                *mode,
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state_dir),
                *self.args,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        if ready:
            self.wait_ready()
        return self

    def start_stand_ins(self) -> None:
        """Start the external sandbox now, before the bot, so a test can steer it first."""
        with self.log_path.open("ab") as log:
            self._sandbox_env(log)

    def _sandbox_env(self, log: Any) -> dict[str, str]:
        if self.sandbox_of is not None:
            info = self.sandbox_of.sandbox()
            shared: dict[str, str] = (
                info["env"] if self.bot is None else info["bots"][self.bot]["env"]
            )
            return shared
        home = self.root / "sandbox"
        if self.sandbox_process is None:
            home.mkdir(mode=0o700, exist_ok=True)
            self.sandbox_process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "khronos_cli.sandbox",
                    "--state-dir",
                    str(home),
                    *self.sandbox_args,
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            wait_for(lambda: (home / "sandbox.json").exists(), timeout=30)
        env: dict[str, str] = self.sandbox()["env"]
        return env

    def wait_ready(self) -> dict[str, Any]:
        wait_for(lambda: self.status().get("state") == "ready", timeout=60)
        return self.status()

    def status(self) -> dict[str, Any]:
        try:
            with ControlClient(self.state_dir, timeout=5) as control:
                data: dict[str, Any] = control.get("/status")
                return data
        except KhronosError:
            return {}

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """Stop whatever still runs: SIGTERM, then SIGKILL (children die with their parent)."""
        worker = self.supervisor().get("worker_pid")
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._admin is not None:
            self._admin.close()
        if self.sandbox_process is not None:
            self.sandbox_process.send_signal(signal.SIGTERM)
            self.sandbox_process.wait(timeout=30)
        if isinstance(worker, int):
            wait_for(lambda: not alive(worker), timeout=20)

    # -- the pieces -----------------------------------------------------------------------------

    def supervisor(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.state_dir / "supervisor.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def sandbox(self) -> dict[str, Any]:
        if self.sandbox_of is not None:
            return self.sandbox_of.sandbox()
        home = self.root / "sandbox" if self.external_sandbox else self.state_dir
        data: dict[str, Any] = json.loads((home / "sandbox.json").read_text())
        return data

    @property
    def admin(self) -> httpx.Client:
        if self._admin is None:
            self._admin = httpx.Client(base_url=self.sandbox()["telegram_base_url"], timeout=10)
        return self._admin

    def public(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        port = self.status()["http_port"]
        return httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=30, **kwargs)

    def push(self, chat_id: int, text: str | None = None, *, voice: str | None = None) -> int:
        body: dict[str, Any] = {"chat_id": chat_id}
        body.update({"voice": voice} if voice is not None else {"text": text})
        answer = self.admin.post(f"{self.admin_path}/messages", json=body)
        answer.raise_for_status()
        return int(answer.json()["message_id"])

    def operator(self) -> list[dict[str, Any]]:
        """What the sandbox's operator chat received (the alerts)."""
        items: list[dict[str, Any]] = self.admin.get("/_sandbox/operator").json()["items"]
        return items

    def ledger(self) -> dict[str, Any]:
        data: dict[str, Any] = self.admin.get(f"{self.admin_path}/ledger").json()
        return data

    def deliveries(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.admin.get(f"{self.admin_path}/deliveries").json()[
            "items"
        ]
        return items

    def llm_mode(self, provider: str, **mode: Any) -> None:
        base = self.sandbox()[f"{provider}_base_url"]
        httpx.post(f"{base}/_sandbox/mode", json=mode, timeout=10).raise_for_status()

    def khronos(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The real CLI, as a subprocess, on this instance's state dir."""
        return subprocess.run(
            [sys.executable, "-m", "khronos_cli", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        )


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def report(instance: Instance) -> dict[str, Any]:
    """The last stop's report (``last-shutdown.json``)."""
    data: dict[str, Any] = json.loads((instance.state_dir / "last-shutdown.json").read_text())
    return data


def crashing(instance: Instance) -> Instance:
    """Its database cannot be opened (a directory stands where the file goes): every worker
    crashes at start, exit 1 (a taken port is refused before the fork instead)."""
    (instance.state_dir / "khronos.db").mkdir()
    return instance


def khronos(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `khronos` command, as a subprocess (``python -m khronos_cli ARGS``)."""
    return subprocess.run(
        [sys.executable, "-m", "khronos_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
