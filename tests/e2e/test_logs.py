"""Logs an operator can use, through `khronos run`: JSON lines, a level, stderr only under a
service manager, the detached run's output rotated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.instance import FAST_CONFIG, Instance, alive, khronos
from tests.support import wait_for

SANDBOX_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ sandbox ")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` but the sandbox's own, each parsed (failing on one that is not
    a JSON object)."""
    lines = [line for line in text.splitlines() if line and not SANDBOX_LINE.match(line)]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(item, dict) for item in parsed), lines
    return parsed


def assert_shape(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"]), line
        assert line["logger"].startswith("khronos."), line
        assert line["level"] in ("debug", "info", "warning", "error", "critical"), line


def test_no_supervise_logs_json_to_stderr_only(make_instance: Any) -> None:
    """`run --no-supervise --log-format json`: every line on stderr (the sandbox's too) is a
    JSON object (ts, level, logger under khronos., message, the event's fields) and no log
    file is written: the service manager keeps stderr."""
    instance: Instance = make_instance(args=("--no-supervise", "--log-format", "json")).start()
    forced = instance.khronos(
        "breakers", "open", "anthropic-api", "--for", "30s", "--reason", "drill"
    )
    assert forced.returncode == 0, forced.stderr

    def forced_line() -> dict[str, Any] | None:
        lines = json_lines(instance.log())
        return next((line for line in lines if line.get("event") == "breaker_forced"), None)

    wait_for(forced_line, timeout=30)
    line = forced_line()
    assert line is not None and line["breaker"] == "anthropic-api" and line["level"] == "warning"
    assert line["reason"] == "drill"
    stopped = instance.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert instance.wait() == 0
    text = instance.log()
    assert not any(SANDBOX_LINE.match(line) for line in text.splitlines())  # its own JSON too
    lines = json_lines(text)
    assert_shape(lines)
    assert any(line["message"].startswith("ready:") for line in lines)
    assert any(line["logger"] == "khronos.sandbox" for line in lines)
    assert not list(instance.state_dir.glob("khronos.log*"))


def test_log_section_sets_format_and_level(make_instance: Any) -> None:
    """`[log] format = "json"`, `level = "warning"` under the supervisor: khronos.log and the
    terminal hold JSON lines at warning and above only (no `ready` info line), the
    supervisor's own lines included."""
    config = FAST_CONFIG + '[log]\nformat = "json"\nlevel = "warning"\n'
    instance: Instance = make_instance(config=config).start()
    forced = instance.khronos("breakers", "open", "openai-api", "--for", "30s", "--reason", "x")
    assert forced.returncode == 0, forced.stderr
    log_file = instance.state_dir / "khronos.log"
    wait_for(lambda: "breaker_forced" in log_file.read_text(), timeout=30)
    stopped = instance.khronos("stop")
    assert stopped.returncode == 0, stopped.stderr
    instance.wait()
    from_file = json_lines(log_file.read_text())
    assert_shape(from_file)
    assert {line["level"] for line in from_file} <= {"warning", "error", "critical"}
    terminal = json_lines(instance.log())
    assert_shape(terminal)
    assert not any(line["message"].startswith("ready:") for line in terminal)


def test_bad_log_settings_are_refused(tmp_path: Path) -> None:
    """A [log] format khronos does not know is exit 78 with one line naming log.format; an
    unknown --log-format is a usage error."""
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    (state / "khronos.toml").write_text('[log]\nformat = "xml"\n')
    done = khronos("config", "--sandbox", "--state-dir", str(state), timeout=60)
    assert done.returncode == 78, done.stderr
    assert "log.format" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    usage = khronos(
        "run", "--sandbox", "--log-format", "xml", "--state-dir", str(tmp_path / "t"), timeout=60
    )
    assert usage.returncode == 2, usage.stderr


def test_detached_run_log_is_rotated(tmp_path: Path) -> None:
    """`run --detach` writes its output to run.log, rotated past `[log] max_bytes` with
    `backups` old files kept: it never grows without bound."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "khronos.toml").write_text("[log]\nmax_bytes = 1500\nbackups = 2\n")
    run = khronos(
        "run",
        "--detach",
        "--sandbox",
        "--users",
        "5",
        "--rate",
        "20",
        "--port",
        "0",
        "--state-dir",
        str(state),
        timeout=90,
    )
    assert run.returncode == 0, run.stderr
    detached = Instance(tmp_path)
    supervisor = detached.supervisor()
    try:
        wait_for(lambda: (state / "run.log.2").exists(), timeout=60)
        wait_for(lambda: (state / "run.log").stat().st_size > 0, timeout=30)
    finally:
        stopped = detached.khronos("stop")
        wait_for(lambda: not alive(supervisor["pid"]), timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    assert not (state / "run.log.3").exists()
    for name in ("run.log", "run.log.1", "run.log.2"):
        assert (state / name).stat().st_size <= 1500, name  # cut between lines
