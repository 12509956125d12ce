"""Hostile input at every door of a live worker: the public port, the webhook, the control socket
and the CLI. Each bad value is a 4xx naming the field (a usage error for the CLI), changes
nothing, opens no breaker; slow and vanishing clients hold nothing past the read timeouts; past
the connection cap /health still answers. After each scenario every breaker is closed with no
failure and the bot still answers a message."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from khronos_cli.control.protocol import socket_path
from khronos_cli.runtime.http import HEADER_TIMEOUT
from khronos_cli.runtime.listener import MAX_CONNECTIONS, OVERFLOW_CONNECTIONS
from tests.instance import FAST_CONFIG, Instance
from tests.reliability.harm import unharmed
from tests.reliability.harness import FULL, percentiles
from tests.support import free_port, wait_for

pytestmark = pytest.mark.timeout(300 if FULL else 120)

INT64_OVER = 99_999_999_999_999_999_999
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One `khronos run --sandbox` for the scenarios of this module."""
    instance = Instance(tmp_path_factory.mktemp("hostile")).start()
    try:
        yield instance
    finally:
        instance.close()


def _control(instance: Instance, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """One raw request on the control socket (raw, so NaN and Infinity reach it as sent)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: khronos\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(socket_path(instance.state_dir)))
        client.sendall(head + body)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


PUBLIC_CASES: list[tuple[str, bytes, str | None]] = [
    ("/messages", b'{"chat_id": 99999999999999999999, "text": "x"}', "chat_id"),
    ("/messages", b'{"chat_id": -9223372036854775809, "text": "x"}', "chat_id"),
    ("/messages", b'{"chat_id": true, "text": "x"}', "chat_id"),
    ("/messages", b'{"chat_id": 1.5, "text": "x"}', "chat_id"),
    ("/messages", b'{"chat_id": NaN, "text": "x"}', "chat_id"),
    ("/messages", b'{"chat_id": 5, "text": "\\ud800"}', "text"),
    ("/messages", b'{"chat_id": 5, "text": ""}', "text"),
    ("/messages", b'{"chat_id": 5, "text": "' + b"x" * 4097 + b'"}', "text"),
    ("/chat", b'{"message": "\\ud800"}', "message"),
    ("/chat", b'{"message": "a\\udfffb"}', "message"),
    ("/chat", b'{"message": Infinity}', "message"),
    ("/chat", b'{"message": "hi", "user": "\\udc80"}', "user"),
    ("/chat", b'{"message": "hi", "user": 1e400}', "user"),
    ("/chat", b'{"message": "hi", "user": ' + b"9" * 5000 + b"}", "user"),
    ("/chat", DEEP, None),
    ("/messages", b'{"chat_id": 5, "text": [' * 40 + b"]" * 40 + b"}", None),
]

CONTROL_CASES: list[tuple[str, bytes, str | None]] = [
    ("/breakers/openai-api/open", b'{"for": 1e308}', "for"),
    ("/breakers/openai-api/open", b'{"for": Infinity}', "for"),
    ("/breakers/openai-api/open", b'{"for": NaN}', "for"),
    ("/breakers/openai-api/open", b'{"for": 901}', "for"),
    ("/breakers/openai-api/open", b'{"for": 60, "reason": "\\ud800"}', "reason"),
    ("/breakers/openai-api/close", b'{"for": Infinity}', "for"),
    ("/breakers/database/close", b'{"for": -Infinity}', "for"),
    ("/outages", b'{"name": "database", "for": 1e308}', "for"),
    ("/outages", b'{"name": "database", "latency": 1e308}', "latency"),
    ("/outages", b'{"name": "database", "probability": NaN}', "probability"),
    ("/outages", b'{"name": "database", "status": 99999999999999999999}', "status"),
    ("/outages", b"[" * 20_000 + b"]" * 20_000, None),
    ("/stop", b'{"deadline": NaN}', "deadline"),
    ("/stop", b'{"deadline": 1e308}', "deadline"),
    ("/stop", b'{"force": false, "deadline": Infinity}', "deadline"),
]

CLI_CASES = [
    ("breakers", "open", "openai-api", "--for", "1e20"),
    ("breakers", "open", "openai-api", "--for", "100000000000000000000"),
    ("breakers", "close", "database", "--for", "nonsense"),
    ("outage", "start", "database", "--for", "16m"),
    ("outage", "start", "database", "--mode", "slow", "--latency", "inf"),
    ("outage", "start", "database", "--probability", "nan"),
    ("limiter", "watch", "--interval", "inf"),
    ("breakers", "--watch", "--interval", "nan"),
    ("stop", "--timeout", "inf"),
]


def test_bad_values_at_every_door_are_refused_naming_the_field_and_open_no_breaker(
    worker: Instance, figures: Callable[..., None]
) -> None:
    """Huge and non-finite numbers, lone surrogates, over-long text and deep nesting on the
    public port and the control socket: 400 naming the field, nothing forced, started or
    stopped; on the CLI: exit 2 with one line. No breaker counts a failure (the issue's 20
    /messages that opened `database`, 5 /chat that opened `anthropic-api`)."""
    port = worker.status()["http_port"]
    answers: dict[str, list[int]] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(4):  # the counts: enough to open both breakers on the old code
            for path, body, field in PUBLIC_CASES:
                answer = client.post(path, content=body)
                answers.setdefault(path, []).append(answer.status_code)
                assert answer.status_code == 400, (path, body[:60], answer.text[:200])
                assert answer.json()["error"].get("field") == field, answer.text[:200]
    for path, body, field in CONTROL_CASES:
        status, error = _control(worker, "POST", path, body)
        assert (status, error["error"].get("field")) == (400, field), (path, body[:60], error)
    assert worker.status()["state"] == "ready"  # no /stop went through
    outputs = []
    for args in CLI_CASES:
        done = worker.khronos(*args)
        outputs.append(done.stderr)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ") and args[-2] in done.stderr, done.stderr
    assert worker.khronos("breakers", "--check").returncode == 0  # reads still work
    figures(
        "hostile input: every door",
        public_requests=sum(len(v) for v in answers.values()),
        control_requests=len(CONTROL_CASES),
        cli_calls=len(CLI_CASES),
        cli_example=outputs[0].strip(),
    )
    assert "Traceback" not in worker.log()
    unharmed(worker)


def test_messages_answer_503_with_retry_after_while_the_database_breaker_is_open(
    worker: Instance,
) -> None:
    """POST /messages while `database` is open: 503 with Retry-After (not a 409 without one);
    nothing queued."""
    assert worker.khronos("breakers", "open", "database", "--for", "30s").returncode == 0
    try:
        answer = worker.public("POST", "/messages", json={"chat_id": 5, "text": "later"})
    finally:
        assert worker.khronos("breakers", "reset", "database").returncode == 0
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["breaker"] == "database"


def test_state_files_are_private(worker: Instance) -> None:
    """Every file of a running instance's state directory is 0600 (its sockets too); the
    directory is 0700."""
    modes = {
        path.name: f"{path.lstat().st_mode & 0o777:04o}"
        for path in worker.state_dir.iterdir()
        if path.name != "khronos.toml"  # the test's own, written before the start
    }
    assert f"{worker.state_dir.stat().st_mode & 0o777:04o}" == "0700"
    assert {"supervisor.json", "run.json", "khronos.log", "khronos.lock"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != "0600"} == {}


def _open_slow(port: int, count: int, head: bytes) -> list[socket.socket]:
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head)
        opened.append(sock)
    return opened


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)
    if not data:
        return True
    return b"408" in data.split(b"\r\n", 1)[0] or _closed_by_server(sock)


def test_slow_clients_are_cut_at_the_read_timeouts_and_health_answers_past_the_cap(
    worker: Instance, figures: Callable[..., None]
) -> None:
    """Slowloris heads and bodies past the connection cap: /health keeps answering (200), other
    requests past the cap get 503 + Retry-After at once, every slow connection is closed by the
    server within the read timeout; clients hanging up mid-body are logged once, no traceback."""
    port = worker.status()["http_port"]
    heads = _open_slow(port, MAX_CONNECTIONS - 100, b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: ")
    bodies = _open_slow(
        port, 100, b'POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"mess'
    )
    held = heads + bodies
    opened_at = time.monotonic()
    samples = []
    refused: list[httpx.Response] = []

    def past_the_cap() -> bool:  # once the worker has accepted every slow connection
        answer = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "past the cap"})
        refused.append(answer)
        return answer.status_code == 503

    wait_for(past_the_cap, timeout=10)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(50):
            started = time.perf_counter()
            health = client.get("/health", headers={"Connection": "close"})
            samples.append(time.perf_counter() - started)
            assert health.status_code == 200 and health.json() == {"status": "alive"}
    assert refused[-1].headers["retry-after"] == "1", refused[-1].text
    extra = _open_slow(port, OVERFLOW_CONNECTIONS + 50, b"GET /he")  # past the overflow too
    wait_for(lambda: all(_closed_by_server(s) for s in held), timeout=HEADER_TIMEOUT + 5)
    held_for = time.monotonic() - opened_at
    wait_for(lambda: all(_closed_by_server(s) for s in extra), timeout=5)
    for sock in held + extra:
        sock.close()
    for _ in range(30):  # hang up mid-body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
    after = worker.public("POST", "/chat", json={"message": "after the storm"})
    figures(
        "hostile neighbours: slow clients",
        slow_heads=len(heads),
        slow_bodies=len(bodies),
        past_the_overflow=len(extra),
        closed_all_within_s=round(held_for, 2),
        header_timeout_s=HEADER_TIMEOUT,
        health_while_saturated=percentiles(samples),
    )
    assert after.status_code == 200
    assert held_for < HEADER_TIMEOUT + 5
    log = worker.log()
    assert "Traceback" not in log
    assert log.count("hung up mid-request") == 1 and log.count("connection limit") == 1
    unharmed(worker)


def _webhook_instance(make_instance: Any) -> tuple[Instance, str]:
    secret = "hostile-webhook-secret-0123456789"
    port = free_port()
    config = FAST_CONFIG + (
        f'[telegram]\nmode = "webhook"\nwebhook_url = "http://127.0.0.1:{port}/telegram/webhook"\n'
    )
    instance: Instance = make_instance(config=config, port=port)
    os.environ["KHRONOS_WEBHOOK_SECRET"] = secret
    try:
        instance.start()
    finally:
        del os.environ["KHRONOS_WEBHOOK_SECRET"]
    return instance, secret


POISON = [
    b"[1, 2, 3]",
    b'"an update"',
    b"{}",
    b'{"update_id": "7"}',
    b'{"update_id": true}',
    b'{"update_id": 18446744073709551616}',
    b'{"update_id": 1e3}',
    b'{"update_id": 9, "message": {"message_id": 1, "chat": {"id": 1e400}, "text": "x"}}',
    b'{"update_id": 10, "message": {"message_id": 1, "chat": {"id": 99999999999999999999}}}',
    b'{"update_id": 11, "message": {"message_id": 1, "chat": {"id": 1}, "text": "\\ud800"}}',
    b'{"update_id": NaN}',
    b"{not json",
    b"\xff\xfe",
    b'{"update_id": 12, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"update_id": 13, "x": "' + b"y" * (300 * 1024) + b'"}',
]


def test_poison_webhook_updates_are_acknowledged_and_counted(
    make_instance: Any, figures: Callable[..., None]
) -> None:
    """Webhook deliveries that are not an object, lack an int64 update_id or hold what no
    Telegram update holds: 200 (Telegram would redeliver anything else for ever), one log
    line, `updates_rejected` in `khronos status --json`; real updates are still answered."""
    instance, secret = _webhook_instance(make_instance)
    header = {"X-Telegram-Bot-Api-Secret-Token": secret, "Content-Type": "application/json"}
    statuses = []
    for body in POISON:
        answer = instance.public("POST", "/telegram/webhook", content=body, headers=header)
        statuses.append(answer.status_code)
    status = json.loads(instance.khronos("status", "--json").stdout)
    figures(
        "hostile input: poison webhook updates",
        sent=len(POISON),
        statuses=sorted(set(statuses)),
        updates_rejected=status["worker"].get("updates_rejected"),
    )
    assert statuses == [200] * len(POISON)
    assert status["worker"]["updates_rejected"] == len(POISON)
    log = instance.log()
    assert log.count("acknowledged an update nobody can process") == 1
    assert "Traceback" not in log
    unharmed(instance)
