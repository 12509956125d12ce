"""Upstream failures named for what they are in the log of a real `khronos run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import free_port, wait_for


def test_refused_and_unresolvable_upstreams_are_named_in_the_log(tmp_path: Path) -> None:
    """Telegram on a port nothing listens on and Anthropic on a host DNS cannot resolve: the
    log says "connection refused" and "name not resolved" (the breaker's reason included),
    never "timed out"."""
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    log = tmp_path / "stderr.log"
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": "123456:test-token",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "KHRONOS_TELEGRAM_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "KHRONOS_ANTHROPIC_BASE_URL": "http://khronos-test.invalid",
        "KHRONOS_OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "khronos_cli",
                "run",
                "--no-supervise",
                "--port",
                "0",
                "--state-dir",
                str(state),
            ],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def text() -> str:
        return log.read_text(errors="replace")

    try:
        wait_for(lambda: "polling failed (telegram-api: connection refused" in text(), timeout=30)
        wait_for(
            lambda: (
                "breaker anthropic-api opened: health check failed: anthropic-api: name not "
                "resolved" in text()
            ),
            timeout=30,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=40)
    assert code == 0, text()
    assert "timed out" not in text() and "ConnectTimeout" not in text()
