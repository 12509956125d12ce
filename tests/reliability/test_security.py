"""Security: the control socket refuses other users, the public port is loopback unless
configured, the webhook secret is compared in constant time, no log or error output of a full
run holds a token, and Telegram text is never interpreted as markup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from khronos_cli.sandbox.stack import ANTHROPIC_SANDBOX_KEY, OPENAI_SANDBOX_KEY
from khronos_cli.sandbox.telegram import SANDBOX_TOKEN
from tests.instance import FAST_CONFIG, Instance, alive
from tests.reliability.harness import FULL, NOBODY, answered, percentiles, size
from tests.support import free_port, wait_for

SECRETS = {
    "TELEGRAM_BOT_TOKEN": SANDBOX_TOKEN,
    "telegram token's secret half": SANDBOX_TOKEN.split(":", 1)[1],
    "ANTHROPIC_API_KEY": ANTHROPIC_SANDBOX_KEY,
    "OPENAI_API_KEY": OPENAI_SANDBOX_KEY,
}

pytestmark = pytest.mark.timeout(600 if FULL else 120)

# A client of the control socket that runs as another user: only the standard library, and a
# system python the other user may execute (the venv's may live under /root).
PEER = textwrap.dedent("""
    import json, socket, sys
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except OSError as exc:
        print(json.dumps({"connect": exc.errno})); sys.exit(0)
    s.sendall(b"GET /status HTTP/1.1\\r\\nHost: khronos\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    print(json.dumps({"status": int(head.split()[1]), "body": body.decode()}))
""")


def _as_nobody(path: Path) -> dict[str, Any]:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or os.getuid() != 0:
        pytest.skip("needs root and a system python3 to run a client as another user")
    done = subprocess.run(
        [python, "-c", PEER, str(path)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_a_peer_of_another_uid_is_refused_by_the_control_socket(
    instance: Instance, figures: Callable[..., None]
) -> None:
    """uid 65534 cannot connect (the 0700 dir, and the 0600 socket itself, reached through a
    link in an open dir: EACCES); with the socket 0666 it connects and the peer-credential
    check answers 403 JSON."""
    path = instance.state_dir / "khronos.sock"
    first = _as_nobody(path)
    assert first == {"connect": 13}  # EACCES
    with tempfile.TemporaryDirectory(prefix="khronos-peer-") as directory:
        os.chmod(directory, 0o755)
        link = Path(directory) / "khronos.sock"
        os.link(path, link)  # the same socket, past the private directory
        through_link = _as_nobody(link)
        os.chmod(path, 0o666)
        try:
            second = _as_nobody(link)
        finally:
            os.chmod(path, 0o600)
    assert through_link == {"connect": 13}
    figures(
        "security: control socket, other uid",
        state_dir_0700=first,
        socket_0600=through_link,
        socket_0666=second,
    )
    assert second["status"] == 403
    assert json.loads(second["body"])["error"]["status"] == 403
    assert "refused a control request from uid 65534" in instance.log()
    assert instance.status()["state"] == "ready"  # and the owner is still served


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.append(address)
    return found


def _other_local_address() -> str | None:
    """A non-loopback address of this host, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def test_the_public_port_binds_loopback_unless_configured(
    make_instance: Any, figures: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default the port listens on 127.0.0.1 only (a non-loopback address is refused);
    with [http] host = "0.0.0.0" (and the token that then requires) it listens on every
    address."""
    default = make_instance("default").start()
    port = default.status()["http_port"]
    listening = _listeners(port)
    other = _other_local_address()
    refused = None
    if other is not None:
        with pytest.raises(ConnectionRefusedError), socket.create_connection((other, port), 2):
            pass
        refused = other
    wide_port = free_port()
    monkeypatch.setenv("KHRONOS_HTTP_TOKEN", "a-token-for-the-public-port")
    wide = make_instance(
        "wide", config=FAST_CONFIG + '[http]\nhost = "0.0.0.0"\n', port=wide_port
    ).start()
    figures(
        "security: public port binding",
        default_listeners=listening,
        refused_on=refused,
        configured_listeners=_listeners(wide.status()["http_port"]),
    )
    assert listening == ["0100007F"]  # 127.0.0.1, and nothing on tcp6
    assert _listeners(wide.status()["http_port"]) == ["00000000"]


def test_a_wrong_webhook_secret_is_refused_whatever_it_shares_with_the_right_one(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """Wrong secrets (all but the last character right, the first wrong, short, empty) are each
    403 and the right one 200. The timing of near and far guesses is recorded beside them, not
    asserted (a 2-core machine's noise is larger than what a leaky comparison would show)."""
    secret = "reliability-webhook-secret-0123456789"
    port = free_port()
    config = FAST_CONFIG + (
        f'[telegram]\nmode = "webhook"\nwebhook_url = "http://127.0.0.1:{port}/telegram/webhook"\n'
    )
    instance = make_instance(config=config, port=port)
    os.environ["KHRONOS_WEBHOOK_SECRET"] = secret
    try:
        instance.start()
    finally:
        del os.environ["KHRONOS_WEBHOOK_SECRET"]
    guesses = {
        "near (all but the last character)": secret[:-1] + "x",
        "far (first character wrong)": "x" + secret[1:],
        "short": "x",
        "empty": "",
    }
    timings: dict[str, list[float]] = {name: [] for name in guesses}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(size(50, 1000)):
            for name, guess in guesses.items():
                started = time.perf_counter()
                header = {"X-Telegram-Bot-Api-Secret-Token": guess}
                answer = client.post("/telegram/webhook", json={"update_id": 1}, headers=header)
                timings[name].append(time.perf_counter() - started)
                assert answer.status_code == 403
        accepted = client.post(
            "/telegram/webhook",
            json={"update_id": 999_999},
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        )
    figures(
        "security: webhook secret comparison",
        guesses_each=len(timings["short"]),
        median_us={k: round(statistics.median(v) * 1e6, 1) for k, v in timings.items()},
        latency={k: percentiles(v) for k, v in timings.items()},
    )
    assert accepted.status_code == 200


def test_no_log_or_error_output_of_a_full_run_holds_a_token(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """A sandbox session with traffic, upstream errors, outages, bad CLI calls (with
    KHRONOS_DEBUG tracebacks), a SIGKILLed worker and a stop: no token or key in any log,
    state file or CLI output."""
    instance: Instance = make_instance(external_sandbox=False).start()
    outputs: list[str] = []

    def cli(*args: str, debug: bool = False) -> None:
        env = {**os.environ, "NO_COLOR": "1", "KHRONOS_DEBUG": "1" if debug else "0"}
        done = subprocess.run(
            [sys.executable, "-m", "khronos_cli", *args, "--state-dir", str(instance.state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        outputs.extend([done.stdout, done.stderr])

    for i in range(10):
        instance.push(500_000 + i, f"hello {i}")
    wait_for(lambda: answered(instance, 10), timeout=60)
    for failure in (
        {"mode": "errors", "status": 401, "methods": ["sendMessage"], "count": 3},
        {"mode": "down", "methods": ["getUpdates"], "count": 3},
    ):
        instance.admin.post("/_sandbox/failure", json=failure).raise_for_status()
    instance.llm_mode("anthropic", mode="errors", status=401, count=3)
    instance.llm_mode("openai", mode="garbage", count=3)
    for args in (
        ("outage", "start", "telegram-api", "--mode", "errors", "--for", "2s"),
        ("outage", "start", "database", "--mode", "down", "--for", "1s"),
        ("breakers", "open", "no-such"),
        ("outage", "start", "x", "--mode", "nope"),
        ("status",),
        ("breakers",),
        ("limiter",),
        ("config",),
        ("outage", "list"),
    ):
        cli(*args, debug=args[0] != "status")
    for i in range(10):
        instance.push(501_000 + i, f"during faults {i}")
    wait_for(lambda: answered(instance, 20), timeout=90)
    worker = instance.status()["pid"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not alive(worker), timeout=10)
    wait_for(lambda: instance.status().get("pid") not in (None, worker), timeout=60)
    cli("stop", debug=True)
    assert instance.wait() == 0
    files = [p for p in instance.root.rglob("*") if p.is_file() and p.name != "sandbox.json"]
    leaks = {
        f"{label} in {where}": True
        for label, token in SECRETS.items()
        for where, text in [
            *(
                (str(p.relative_to(instance.root)), p.read_bytes().decode("utf-8", "replace"))
                for p in files
            ),
            *(("cli output", o) for o in outputs),
        ]
        if token in text
    }
    figures(
        "security: token scan of a full run",
        files_scanned=sorted(str(p.relative_to(instance.root)) for p in files),
        cli_outputs_scanned=len(outputs),
        log_bytes=sum(p.stat().st_size for p in files),
        leaks=sorted(leaks),
    )
    assert leaks == {}
    assert any("Traceback" in o or "error" in o for o in outputs)  # errors were really shown


MARKUP = ["[bold red]x[/bold red]", "<b>x</b> & <i>y</i>", "*bold* _it_ `code`", "[link](x)"]


def test_telegram_text_is_never_interpreted_as_markup(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """Markup from users reaches Telegram verbatim with no parse_mode; the sandbox session's
    output and the CLI show it literally."""
    instance: Instance = make_instance(args=("--users", "1", "--rate", "3")).start()
    for i, text in enumerate(MARKUP):
        instance.push(600_000 + i, text)
    wait_for(
        lambda: (
            len(
                {d["chat_id"] for d in instance.deliveries()}
                & {600_000 + i for i in range(len(MARKUP))}
            )
            == len(MARKUP)
        ),
        timeout=60,
    )
    wait_for(lambda: "[bold red]isto não é markup[/bold red]" in instance.log(), timeout=60)
    ours = {d["chat_id"]: d for d in instance.deliveries() if d["chat_id"] >= 600_000}
    forced = instance.khronos(
        "breakers", "open", "openai-api", "--for", "1m", "--reason", MARKUP[0]
    )
    table = instance.khronos("breakers")
    figures(
        "security: markup stays text",
        sent=MARKUP,
        delivered=[ours[600_000 + i]["text"] for i in range(len(MARKUP))],
        parse_modes=sorted({str(d.get("parse_mode")) for d in instance.deliveries()}),
    )
    for i, text in enumerate(MARKUP):
        assert ours[600_000 + i]["text"] == f"anthropic echo: {text}"
    assert all(d.get("parse_mode") is None for d in instance.deliveries())
    assert forced.returncode == 0 and MARKUP[0] in table.stdout, table.stdout
    assert instance.khronos("stop", "--force").returncode == 1  # a quick stop is forced: 1
