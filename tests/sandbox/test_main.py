"""`python -m khronos_cli.sandbox` as a real process: the mix by default, --plain, the latencies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import wait_for

COUNT = 120


def start(state: Path, *options: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "khronos_cli.sandbox", "--state-dir", str(state)]
    return subprocess.Popen(
        [*command, "--quiet", "--rate", "200", "--count", str(COUNT), *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kinds_when_done(state: Path) -> tuple[Counter[str], dict[str, object]]:
    wait_for(lambda: (state / "sandbox.json").exists(), timeout=30)
    info = json.loads((state / "sandbox.json").read_text())
    admin = f"{info['telegram_base_url']}/_sandbox"
    wait_for(lambda: httpx.get(f"{admin}/stats").json()["pushed"] >= COUNT, timeout=30)
    items = httpx.get(f"{admin}/messages").json()["items"]
    stats = httpx.get(f"{info['openai_base_url']}/_sandbox/stats").json()
    return Counter(item["kind"] for item in items), stats


def stop(process: subprocess.Popen[bytes], state: Path) -> None:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode(errors="replace")
    assert b"sandbox users: sent=" in stderr
    assert not (state / "sandbox.json").exists()


@pytest.mark.parametrize(("options", "mixed"), [((), True), (("--plain",), False)])
def test_the_module_mixes_traffic_unless_plain(
    tmp_path: Path, options: tuple[str, ...], mixed: bool
) -> None:
    """By default the users' traffic holds stickers, service messages and a blocked user's
    my_chat_member; with --plain only texts and voice notes; --token-latency reaches the LLMs."""
    process = start(tmp_path, "--token-latency", "0.25", *options)
    try:
        kinds, llm = kinds_when_done(tmp_path)
    finally:
        stop(process, tmp_path)
    assert llm["token_latency"] == 0.25
    if mixed:
        assert kinds["sticker"] and kinds["service"] and kinds["my_chat_member"]
    else:
        assert set(kinds) <= {"text", "voice"}
