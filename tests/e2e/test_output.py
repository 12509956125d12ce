"""What the operator reads, through the real `khronos` against one live `khronos run --sandbox`:
piped tables whole, JSON keyed by name with integer counts, `--json` on every write, `--all`
on every read, and the fast path printing the Typer path's bytes."""

from __future__ import annotations

import http.server
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from khronos_cli.cli.fast import _parse
from khronos_cli.control.client import ControlClient
from tests.instance import Instance
from tests.support import wait_for

BOX = set("│┃━─┏┓┗┛┡┩└┘├┤┼╇╈")
PIPED_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One `khronos run --sandbox` for the module's read-mostly checks."""
    running = Instance(tmp_path_factory.mktemp("output")).start()
    try:
        yield running
    finally:
        running.close()


def piped(state_dir: Path, *args: str, typer: bool = False) -> subprocess.CompletedProcess[str]:
    """`khronos ARGS` with stdout and stderr pipes and no COLUMNS: what `| cat` sees. With
    ``typer`` the Typer app runs directly, without the fast path in front of it."""
    entry = ["-c", "from khronos_cli.cli.app import app; app()"] if typer else ["-m", "khronos_cli"]
    return subprocess.run(
        [sys.executable, *entry, *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**PIPED_ENV, "NO_COLOR": "1"},
    )


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_piped_tables_are_full_width_plain_columns(live: Instance) -> None:
    """Without a terminal every table prints plain columns with every cell whole: no box, no
    `…`, no trailing space, no `None`; `khronos breakers | cat` shows every count in full."""
    live.push(6001, "something to count")
    wait_for(lambda: live.ledger()["answered"] == 1, timeout=30)
    headers = {
        ("breakers",): [
            "name",
            "state",
            "err %",
            "ok/fail/tmo/rej",
            "fb",
            "p50/p99 ms",
            "trial in",
            "forced",
        ],
        ("limiter",): [
            "name",
            "exec",
            "queued",
            "done",
            "dropped",
            "failed",
            "rate/s",
            "keys",
            "last minute",
        ],
        ("status", "--all"): [
            "replica",
            "state",
            "pid",
            "poller",
            "accepted",
            "sent",
            "queued",
            "jobs",
            "redis",
        ],
    }
    for args in (*headers, ("status",), ("breakers", "--all"), ("limiter", "--all")):
        shown = piped(live.state_dir, *args)
        assert shown.returncode == 0, (args, shown.stderr)
        text = shown.stdout
        assert "…" not in text and not BOX & set(text), (args, text)
        assert "None" not in text, (args, text)
        assert all(line == line.rstrip() for line in text.splitlines()), args
        if args in headers:
            assert columns(text.splitlines()[0]) == headers[args], (args, text)
    table = piped(live.state_dir, "breakers").stdout.splitlines()
    rows = {columns(line)[0]: columns(line) for line in table[1:]}
    assert set(rows) == set(json.loads(piped(live.state_dir, "breakers", "--json").stdout))
    for name, cells in rows.items():
        assert re.fullmatch(r"\d+/\d+/\d+/\d+", cells[3]), (name, cells)
        assert re.fullmatch(r"(\d+|—)/(\d+|—)", cells[5]), (name, cells)
    assert int(rows["telegram-api"][3].split("/")[0]) >= 1  # the reply it sent, whole
    summary = dict(columns(line) for line in piped(live.state_dir, "status").stdout.splitlines())
    assert summary["state"] == "ready" and summary["jobs"] == "0 running", summary


def test_json_is_keyed_by_name_and_every_write_has_json(live: Instance) -> None:
    """outage start/list/stop and breakers open/close/reset --json print objects keyed by name;
    `--all` totals keep integers; a message on stderr stays one line however long."""
    started = piped(live.state_dir, "outage", "start", "anthropic-api", "--for", "30s", "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["anthropic-api"]["mode"] == "down"
    listed = json.loads(piped(live.state_dir, "outage", "list", "--json").stdout)
    assert list(listed) == ["anthropic-api"] and listed["anthropic-api"]["remaining_s"] > 0
    ended = piped(live.state_dir, "outage", "stop", "anthropic-api", "--json")
    assert list(json.loads(ended.stdout)) == ["anthropic-api"]
    assert json.loads(piped(live.state_dir, "outage", "list", "--json").stdout) == {}
    said = piped(
        live.state_dir, "outage", "start", "database", "--for", "1s", "--probability", "0.01"
    )
    assert said.returncode == 0 and len(said.stderr.splitlines()) == 1, said.stderr
    assert "`khronos outage stop database`" in said.stderr
    for action, state in (("open", "open"), ("close", "closed"), ("reset", "closed")):
        extra = () if action == "reset" else ("--for", "1m", "--reason", "drill")
        forced = piped(live.state_dir, "breakers", action, "openai-api", *extra, "--json")
        assert forced.returncode == 0, forced.stderr
        snap = json.loads(forced.stdout)["openai-api"]
        assert snap["state"] == state and (snap["forced"] is None) == (action == "reset")
    unknown = piped(live.state_dir, "breakers", "open", "no-such-breaker")
    assert unknown.returncode == 2 and "no-such-breaker" in unknown.stderr
    for command, part in (("limiter", "limiters"), ("breakers", "breakers")):
        every = piped(live.state_dir, command, "--all", "--json")
        assert every.returncode == 0, every.stderr
        data = json.loads(every.stdout)
        assert [set(r) for r in data["replicas"]] == [{"replica", "leader", part}]
        counts = [v for t in data["totals"].values() for k, v in t.items() if k != "rate"]
        assert counts and all(isinstance(v, int | dict) for v in counts), data["totals"]


class _UnixHTTP(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def replay(path: Path, answers: dict[str, Any]) -> _UnixHTTP:
    """A control socket that answers each GET with what a real worker answered before."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps(answers[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:
            return "unix"

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = _UnixHTTP(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_fast_path_prints_the_typer_paths_bytes(live: Instance, tmp_path: Path) -> None:
    """Every form the fast path takes (status, breakers, limiter, outage list; --all, --check;
    tables and --json) prints the same bytes, stderr and exit code as the Typer app, live and
    stopped."""
    with ControlClient(live.state_dir) as control:
        control.post("/outages", {"name": "openai-api", "for": 60, "probability": 0.01})
        control.post("/breakers/openai-transcription/open", {"for": 60})
        answers = {p: control.get(p) for p in ("/breakers", "/limiters", "/outages", "/replicas")}
        answers["/status"] = {**control.get("/status"), "started_at": None}  # no moving uptime
        control.delete("/outages")
        control.post("/breakers/openai-transcription/reset", {})
    recorded = tmp_path / "recorded"
    recorded.mkdir(mode=0o700)
    server = replay(recorded / "khronos.sock", answers)
    stopped = tmp_path / "stopped"
    stopped.mkdir(mode=0o700)
    (stopped / "last-shutdown.json").write_text(json.dumps({"result": "clean", "exit_code": 0}))
    forms = [
        ("status",),
        ("status", "--all"),
        ("breakers",),
        ("breakers", "--all"),
        ("breakers", "--all", "--check"),
        ("limiter",),
        ("limiter", "--all"),
        ("outage", "list"),
    ]
    runs = [(recorded, form) for form in forms] + [(stopped, ("status",)), (stopped, ("limiter",))]
    runs += [(directory, (*form, "--json")) for directory, form in runs]
    assert all(_parse(list(form)) is not None for _, form in runs)
    try:
        with ThreadPoolExecutor(4) as pool:
            fast = list(pool.map(lambda run: piped(run[0], *run[1]), runs))
            full = list(pool.map(lambda run: piped(run[0], *run[1], typer=True), runs))
    finally:
        server.shutdown()
        server.server_close()
    codes = {}
    for (directory, form), one, other in zip(runs, fast, full, strict=True):
        assert (one.returncode, one.stdout, one.stderr) == (
            other.returncode,
            other.stdout,
            other.stderr,
        ), form
        assert "Traceback" not in one.stderr, form
        codes[directory.name, form] = one.returncode
    for json_form in ((), ("--json",)):
        assert codes["recorded", ("breakers", "--all", "--check", *json_form)] == 1  # forced open
        assert codes["recorded", ("status", *json_form)] == 0
        assert codes["recorded", ("outage", "list", *json_form)] == 0
        assert codes["stopped", ("status", *json_form)] == 3
        assert codes["stopped", ("limiter", *json_form)] == 3
    assert json.loads(fast[-2].stdout)["last_shutdown"]["result"] == "clean"
    assert fast[forms.index(("breakers",))].stdout.startswith("name ")  # a table, not JSON
