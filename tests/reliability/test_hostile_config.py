"""Hostile configuration and secrets through the real processes: what cannot work stops `khronos
run` with exit 78 and one line (no restart loop, no traceback), and a secret an upstream quotes
back never lands in the outbox or the log."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from khronos_cli.sandbox.telegram import SANDBOX_TOKEN
from tests.instance import FAST_CONFIG, Instance
from tests.support import wait_for

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
REFUSE_WITHIN = 20.0  # seconds: a refusal is immediate; on a restart loop this runs out

pytestmark = pytest.mark.timeout(120)


def run(
    state: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`khronos run ARGS` on ``state``: it must end by itself (refused), not run on."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "khronos_cli", "run", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=REFUSE_WITHIN,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def test_a_config_that_cannot_work_is_refused_by_khronos_run_in_one_line(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    """Typos in breaker or limiter names, values out of range, a non-UTF-8 file, TOML nested
    5,000 deep and a token with a trailing newline: `khronos run` exits 78 at once with one
    line naming the key, and never shows the token."""
    cases: dict[str, tuple[bytes, dict[str, str]]] = {
        "breakers.anthropic_api": (b'[breakers.anthropic_api]\ntimeout = "2s"\n', {}),
        "limiters.telegam": (b'[limiters.telegam]\nrates = ["1/s"]\n', {}),
        "breakers.database.buckets": (b"[breakers.database]\nbuckets = 100000000\n", {}),
        "supervisor.restart_delay": (b"[supervisor]\nrestart_delay = 1e308\n", {}),
        "(encoding)": (b'[http]\nhost = "\xff"\n', {}),
        "(syntax)": (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", {}),
        "TELEGRAM_BOT_TOKEN": (b"", {"TELEGRAM_BOT_TOKEN": TOKEN + "\n"}),
    }
    lines = {}
    for n, (key, (text, env)) in enumerate(cases.items()):
        state = tmp_path / f"c{n}"  # short: the control socket's path must fit in 107 bytes
        state.mkdir(mode=0o700)
        (state / "khronos.toml").write_bytes(text)
        started = time.monotonic()
        done = run(state, "--sandbox", "--users", "0", "--port", "0", env=env)
        shown = [line for line in done.stderr.splitlines() if line.strip()]
        lines[key] = shown
        assert done.returncode == 78, (key, done.stderr)
        assert len(shown) == 1 and key in shown[0] and "Traceback" not in done.stderr, shown
        assert TOKEN.split(":")[1] not in done.stderr + done.stdout
        assert time.monotonic() - started < 10
    figures("hostile config: refused by khronos run", lines={k: v[0] for k, v in lines.items()})


def test_a_host_that_cannot_work_or_no_token_exit_78_before_anything_starts(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    """An http.host that does not resolve or is not this machine's, and no bot token outside
    the sandbox: exit 78 and the output names the key; `khronos run` finds each before it starts
    anything (the worker checks the same again: a bind that fails there is exit 78 too)."""
    sandbox = ["--sandbox", "--users", "0", "--port", "0"]
    beyond = {"KHRONOS_HTTP_TOKEN": "a-token-for-the-public-port"}  # beyond loopback: required
    cases = {
        "no.such.host.invalid": (sandbox, '[http]\nhost = "no.such.host.invalid"\n', beyond),
        "192.0.2.1": (sandbox, '[http]\nhost = "192.0.2.1"\n', beyond),  # TEST-NET-1: nobody's
        "TELEGRAM_BOT_TOKEN": (["--port", "0"], "", {"TELEGRAM_BOT_TOKEN": ""}),
    }
    outcome = {}
    for key, (args, text, env) in cases.items():
        state = tmp_path / key.replace(".", "-")
        state.mkdir(mode=0o700)
        (state / "khronos.toml").write_text(text)
        done = run(state, *args, env=env)
        assert done.returncode == 78, (key, done.stderr[-2000:])
        assert key in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert not (state / "supervisor.json").exists()  # nothing was started
        outcome[key] = next(line for line in done.stderr.splitlines() if key in line)
    figures("hostile config: refused before the fork", lines=outcome)


class QuotingProxy:
    """A reverse proxy in front of the sandbox's Telegram that answers the first
    ``sendMessage`` with a 502 whose description quotes the request path — token and all —
    as a misconfigured proxy would, and forwards everything else."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.quoted = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.endswith("/sendMessage") and proxy.quoted == 0:
                    proxy.quoted += 1
                    description = f"Bad Gateway: upstream timed out on POST {self.path}"
                    self.answer(502, {"ok": False, "error_code": 502, "description": description})
                    return
                headers = {"content-type": self.headers.get("content-type", "application/json")}
                forwarded = httpx.post(
                    proxy.upstream + self.path, content=body, headers=headers, timeout=60
                )
                self.answer(forwarded.status_code, forwarded.json())

            def answer(self, status: int, data: Any) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BehindProxy(Instance):
    """An instance on an external sandbox whose worker reaches Telegram through a proxy."""

    proxy: QuotingProxy

    def _sandbox_env(self, log: Any) -> dict[str, str]:
        env = super()._sandbox_env(log)
        if not hasattr(self, "proxy"):
            self.proxy = QuotingProxy(env["KHRONOS_TELEGRAM_BASE_URL"])
        return {**env, "KHRONOS_TELEGRAM_BASE_URL": self.proxy.url}


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[BehindProxy]:
    instance = BehindProxy(tmp_path, config=FAST_CONFIG, external_sandbox=True)
    try:
        yield instance
    finally:
        instance.close()
        if hasattr(instance, "proxy"):
            instance.proxy.close()


def test_a_token_an_upstream_quotes_never_reaches_the_outbox_or_the_log(
    behind_proxy: BehindProxy, figures: Callable[..., None]
) -> None:
    """A send refused with an error that quotes `/bot<token>/sendMessage`: the message is
    retried and delivered, and `outbox.last_error`, the log and the CLI output hold `/bot***/`,
    never the token."""
    instance = behind_proxy.start()
    instance.push(7100, "hello through a proxy")
    wait_for(lambda: len(instance.deliveries()) == 1, timeout=30)
    assert instance.proxy.quoted == 1
    with sqlite3.connect(instance.state_dir / "khronos.db") as db:
        stored = [row[0] for row in db.execute("SELECT last_error FROM outbox") if row[0]]
    outputs = [
        instance.khronos(*args).stdout for args in (("status", "--json"), ("breakers", "--json"))
    ]
    secret = SANDBOX_TOKEN.split(":")[1]
    texts = {
        "outbox.last_error": " ".join(stored),
        "log": (instance.state_dir / "khronos.log").read_text(),
        "cli": " ".join(outputs),
    }
    figures("hostile config: token quoted by an upstream", last_error=stored)
    assert stored and "/bot***/sendMessage" in stored[0], stored
    assert {where: secret in text for where, text in texts.items()} == dict.fromkeys(texts, False)
