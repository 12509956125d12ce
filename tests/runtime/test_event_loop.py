"""The worker's event loop: uvloop when installed (a core dependency), asyncio on request, and a
bad ``KHRONOS_EVENT_LOOP`` refused as configuration (exit 78) before anything starts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from khronos_cli.errors import ConfigError
from khronos_cli.runtime.worker import event_loop


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_worker_runs_on_uvloop_unless_told_asyncio() -> None:
    """auto and uvloop run the coroutine on uvloop's loop; asyncio on the standard one."""
    for wanted in ("auto", "uvloop"):
        name, run = event_loop({} if wanted == "auto" else {"KHRONOS_EVENT_LOOP": wanted})
        assert name.startswith("uvloop")
        assert run(loop_module()).startswith("uvloop")
    name, run = event_loop({"KHRONOS_EVENT_LOOP": "asyncio"})
    assert name == "asyncio"
    assert run(loop_module()).startswith("asyncio")


def test_an_unknown_event_loop_is_a_configuration_error(tmp_path: Path) -> None:
    """A typo names the variable, the value and the choices, and the worker exits 78."""
    with pytest.raises(ConfigError, match=r"KHRONOS_EVENT_LOOP.*uvlop.*auto, uvloop or asyncio"):
        event_loop({"KHRONOS_EVENT_LOOP": "uvlop"})
    env = {
        **os.environ,
        "KHRONOS_EVENT_LOOP": "uvlop",
        "TELEGRAM_BOT_TOKEN": "123456:ABCDEFabcdef_1234567890abcdefABCDE",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "OPENAI_API_KEY": "sk-test",
    }
    command = [sys.executable, "-m", "khronos_cli.runtime.worker", "--state-dir", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert "KHRONOS_EVENT_LOOP" in done.stderr and "uvlop" in done.stderr
    assert not (tmp_path / "khronos.db").exists()


def test_khronos_run_refuses_an_unknown_event_loop_before_the_fork(tmp_path: Path) -> None:
    """`khronos run --sandbox` with a typo in KHRONOS_EVENT_LOOP exits 78 starting nothing."""
    env = {**os.environ, "KHRONOS_EVENT_LOOP": "uvlop", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "khronos_cli", "run", "--sandbox", "--state-dir"]
    done = subprocess.run(
        [*command, str(tmp_path / "state")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 78
    assert "KHRONOS_EVENT_LOOP" in done.stderr and "uvlop" in done.stderr
    assert "sandbox ready" not in done.stdout + done.stderr
    assert not (tmp_path / "state" / "run.json").exists()
