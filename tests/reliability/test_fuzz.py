"""Bad input, property-based (hypothesis): the control socket's protocol, every public endpoint,
and config files. Every case answers a 4xx (or a valid 2xx) or a clear config error, never a 5xx
or another exception, and one worker per module keeps serving after each batch. The values
include what JSON parsers let through and our dependencies cannot take: NaN and Infinity, numbers
past int64 and past float, lone surrogates, nesting 100,000 deep.

Not fuzzed on the socket with valid bodies: ``POST /stop`` (a valid body *is* a stop) and
``GET /events`` (an endless stream). ``POST /stop`` gets hostile bodies only (each holds a value
no request may hold), as every other door does in the breaker check: after them every breaker is
still closed with no new failure, and the bot answers.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khronos_cli.config import Settings, load
from khronos_cli.control.protocol import socket_path
from khronos_cli.errors import ConfigError
from khronos_cli.resilience.breaker.registry import build_breakers
from khronos_cli.resilience.limiter.registry import Limiters
from tests.instance import Instance
from tests.reliability.harm import failures, unharmed
from tests.reliability.harness import FULL, size

EXAMPLES = size(50, 1000)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not FULL,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

pytestmark = pytest.mark.timeout(1800 if FULL else 120)

NAMES = ["anthropic-api", "telegram-api", "openai-api", "database", "nope", "", "..", "%00"]

surrogates = st.builds(
    lambda before, lone, after: before + lone + after,
    st.text(max_size=5),
    st.characters(categories=["Cs"]),
    st.text(max_size=5),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.integers(-(10**60), 10**60)
    | surrogates
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _field_dicts(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the endpoint's own keys (and strange values): they reach the validation."""
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), json_values, max_size=5)


def _encode(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


bodies = st.one_of(
    st.binary(max_size=300),
    st.integers(30, 100_000).map(_nested),
    json_values.map(_encode),
    _field_dicts(
        [
            "for",
            "reason",
            "name",
            "mode",
            "probability",
            "status",
            "latency",
            "message",
            "chat_id",
            "text",
            "force",
            "deadline",
        ]
    ).map(_encode),
)
header_values = st.text(
    st.characters(min_codepoint=32, max_codepoint=126), max_size=40
)  # printable: the request line itself stays parseable


# -- one worker for the module ----------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One `khronos run --sandbox` for every fuzz batch of this module."""
    instance = Instance(tmp_path_factory.mktemp("fuzz")).start()
    try:
        yield instance
    finally:
        instance.close()


def still_serving(instance: Instance) -> None:
    """After a batch: the public port and the control socket answer, the worker is ready, and
    no fuzzed outage or forced state is left behind."""
    assert instance.public("GET", "/health").status_code == 200
    assert instance.status()["state"] == "ready"
    result = instance.khronos("outage", "stop")
    assert result.returncode == 0, result.stderr
    for name in NAMES[:4]:
        assert instance.khronos("breakers", "reset", name).returncode == 0


def _raw(path: Path, request: bytes, *, half_close: bool = True) -> bytes:
    """Send ``request`` on the unix socket and read until the server closes. A half close
    (``half_close``) may end the connection before the answer: aiohttp closes on EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(request)
        if half_close:
            client.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status(answer: bytes) -> int | None:
    """The status of the first HTTP response, or None when the server just closed."""
    if not answer:
        return None
    assert answer.startswith(b"HTTP/1."), answer[:100]
    return int(answer.split(b" ", 2)[1])


control_paths = st.one_of(
    st.sampled_from(["/status", "/breakers", "/limiters", "/outages", "/"]),
    st.builds(
        lambda n, a: f"/breakers/{n}/{a}",
        st.sampled_from(NAMES),
        st.sampled_from(["open", "close", "reset", "explode", ""]),
    ),
    st.builds(lambda n: f"/outages/{n}", st.sampled_from(NAMES)),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)
    .map(lambda p: "/" + p.lstrip("/"))
    .filter(lambda p: not p.startswith(("/stop", "/events"))),
)
methods = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "BREW"])


def test_the_control_socket_answers_any_request_with_a_4xx_or_a_valid_answer(
    worker: Instance,
) -> None:
    """Random methods, paths, headers and bodies on the control socket: never a 5xx, and the
    worker keeps serving."""
    sock = socket_path(worker.state_dir)

    @FUZZ
    @given(
        method=methods,
        path=control_paths,
        body=bodies,
        headers=st.dictionaries(
            st.sampled_from(["Content-Type", "X-Anything", "Accept", "Expect"]),
            header_values,
            max_size=3,
        ),
    )
    def case(method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: khronos\r\n{head}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + body
        status = _status(_raw(sock, request))
        assert status is None or status < 500, (method, path, body[:80], status)

    case()
    still_serving(worker)


def test_raw_bytes_on_the_control_socket_never_hurt_the_worker(worker: Instance) -> None:
    """Arbitrary bytes (not HTTP) on the control socket: a 4xx or a closed connection."""
    sock = socket_path(worker.state_dir)

    @FUZZ
    @given(payload=st.binary(min_size=1, max_size=2000))
    def case(payload: bytes) -> None:
        status = _status(_raw(sock, payload))
        assert status is None or 400 <= status < 500, (payload[:80], status)

    case()
    still_serving(worker)


PUBLIC = [
    "/breakers/status",
    "/limiter/stats",
    "/chat",
    "/messages",
    "/health",
    "/ready",
    "/metrics",
    "/telegram/webhook",
]


def test_every_public_endpoint_answers_random_input_with_a_4xx_or_a_valid_answer(
    worker: Instance,
) -> None:
    """Random methods and bodies on every public endpoint (and unknown paths): a 2xx for a
    valid request, a 4xx JSON error otherwise, never a 5xx; the port keeps serving."""
    port = worker.status()["http_port"]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    @FUZZ
    @given(
        method=methods.filter(lambda m: m != "HEAD"),
        path=st.sampled_from(PUBLIC) | st.text(max_size=20).map(lambda p: "/" + p),
        body=bodies,
        content_type=st.sampled_from(["application/json", "text/plain", "", "multipart/x"]),
    )
    def case(method: str, path: str, body: bytes, content_type: str) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            answer = client.request(method, path, content=body, headers=headers)
        except httpx.InvalidURL:
            return  # httpx refuses to send it: not a request the server can see
        assert answer.status_code < 500, (method, path, body[:80], answer.text[:200])
        if answer.status_code >= 400 and answer.headers.get("content-type", "").startswith(
            "application/json"
        ):
            assert answer.json()["error"]["status"] == answer.status_code

    try:
        case()
    finally:
        client.close()
    still_serving(worker)


# -- hostile values: refused at every door, no breaker failure -----------------------------------

hostile = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 2**63, -(2**63) - 1, 10**60]),
    surrogates,
    st.integers(33, 300).map(lambda depth: json.loads(_nested(depth))),
)
DOORS = {
    **{
        f"/breakers/{name}/{action}": ["for", "reason"]
        for name in NAMES[:4]
        for action in ("open", "close")
    },
    "/outages": ["name", "mode", "for", "probability", "status", "latency"],
    "/stop": ["force", "deadline"],
    "/chat": ["message", "user"],
    "/messages": ["chat_id", "text"],
}


def _hostile_body(keys: list[str]) -> st.SearchStrategy[bytes]:
    """A body for a door with its own keys and one hostile value (or nesting 100,000 deep)."""
    spoiled = st.builds(
        lambda body, key, bad: _encode({**body, key: bad}),
        _field_dicts(keys),
        st.sampled_from(keys) | st.text(max_size=8),
        hostile,
    )
    return spoiled | st.integers(33, 100_000).map(_nested)


def test_hostile_values_at_every_door_open_no_breaker(worker: Instance) -> None:
    """Each door (the control socket's writes, /stop included, and /chat, /messages) gets bodies
    holding NaN, Infinity, 1e308, integers past int64, lone surrogates or deep nesting: the
    socket answers 4xx (nothing forced, started or stopped), the port never 5xx; afterwards every
    breaker is closed with no new failure and the bot answers."""
    sock = socket_path(worker.state_dir)
    port = worker.status()["http_port"]
    before = failures(worker)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    @FUZZ
    @given(data=st.data(), door=st.sampled_from(sorted(DOORS)))
    def case(data: st.DataObject, door: str) -> None:
        body = data.draw(_hostile_body(DOORS[door]))
        if door in ("/chat", "/messages"):
            status = client.post(door, content=body).status_code
            assert status < 500, (door, body[:80], status)
            return
        request = (
            f"POST {door} HTTP/1.1\r\nHost: khronos\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + body
        status = _status(_raw(sock, request, half_close=False))
        assert status is not None and 400 <= status < 500, (door, body[:80], status)

    try:
        case()
    finally:
        client.close()
    assert worker.status()["state"] == "ready"
    unharmed(worker, before)


# -- config files --------------------------------------------------------------------------------

KNOWN = {
    "http": ["host", "port"],
    "telegram": ["base_url", "mode", "webhook_url"],
    "anthropic": ["base_url", "model"],
    "openai": ["base_url", "model"],
    "shutdown": ["deadline", "jobs_timeout", "outbox_timeout", "quick_budget"],
    "supervisor": [
        "restart_delay",
        "max_restart_delay",
        "healthy_after",
        "crashloop_after",
        "kill_after",
    ],
}
BREAKER_KEYS = [
    "timeout",
    "error_threshold",
    "reset_timeout",
    "volume_threshold",
    "rolling_window",
    "buckets",
    "half_open_max_calls",
    "half_open_max_wait",
    "health_check_interval",
    "policy",
    "fail_max",
]
LIMITER_KEYS = [
    "group_by",
    "max_concurrent",
    "min_time",
    "max_queued",
    "rates",
    "group_rates",
    "global_max_concurrent",
    "global_min_time",
    "global_rates",
    "strategy",
    "idle_timeout",
]

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "500ms",
            "30s",
            "2m",
            "0s",
            "-1s",
            "1h",
            "none",
            "30/s",
            "20/min",
            "100/10s",
            "0/s",
            "1/0s",
            "error_rate",
            "consecutive",
            "reject",
            "drop-oldest",
            "drop-lowest",
            "chat",
            "user",
            "polling",
            "webhook",
            "http://127.0.0.1:1",
            "ftp://x",
            "1e999s",
            "nan",
        ]
    ),
)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=4)


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), toml_values, max_size=4)


named = st.sampled_from(
    [
        "anthropic-api",
        "telegram-api",
        "openai-api",
        "database",
        "telegram",
        "global",
        "anthropic",
        "whisper",
        "custom",
        "x y",
    ]
)
documents = st.fixed_dictionaries(
    {},
    optional={
        **{name: _table(keys) | toml_scalars for name, keys in KNOWN.items()},
        "redis_url": toml_scalars,
        "breakers": st.dictionaries(named, _table(BREAKER_KEYS), max_size=3) | toml_scalars,
        "limiters": st.dictionaries(named, _table(LIMITER_KEYS), max_size=3) | toml_scalars,
        "surprise": toml_values,
    },
)


def _toml_string(text: str) -> str:
    return json.dumps(text)  # JSON's escapes are TOML basic-string escapes


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    assert isinstance(value, list)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def to_toml(document: dict[str, Any]) -> str:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in document.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_string(key)} = {_toml_value(value)}")
    for name, table in tables:
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines.append(f"[{_toml_string(name)}]")
        lines += [
            f"{_toml_string(k)} = {_toml_value(v)}" for k, v in table.items() if k not in nested
        ]
        for sub, values in nested.items():
            lines.append(f"[{_toml_string(name)}.{_toml_string(sub)}]")
            lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _usable(settings: Settings) -> None:
    """What the worker builds from the settings at start (breakers, limiters) builds."""

    async def build() -> None:
        breakers = build_breakers(settings.breakers)
        limiters = Limiters.build(settings.limiters)
        await limiters.aclose()
        await breakers.aclose()

    asyncio.run(build())


def _check_config(text: str) -> str:
    """Load ``text`` as khronos.toml: it loads (and builds), or raises ConfigError naming a key."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "khronos.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            settings = load(path, env={}, state_dir=directory)
        except ConfigError as exc:
            assert exc.key and exc.key in str(exc), str(exc)
            assert "\n" not in str(exc).strip() or exc.key == "(syntax)", str(exc)
            return "config error"
        try:
            _usable(settings)
        except ConfigError as exc:
            assert exc.key and exc.key in str(exc), str(exc)
            return "config error at build"
    return "loaded"


def test_config_files_load_or_fail_with_a_config_error_naming_the_key(
    figures: Any,
) -> None:
    """Random khronos.toml documents (known tables and keys, strange values): each loads and
    builds, or raises ConfigError naming the key; never another exception."""
    outcomes: dict[str, int] = {}

    @FUZZ
    @given(document=documents)
    def case(document: dict[str, Any]) -> None:
        outcome = _check_config(to_toml(document))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    case()
    figures("bad input: config documents", examples=EXAMPLES, outcomes=outcomes)


def test_random_text_as_a_config_file_is_a_config_error(figures: Any) -> None:
    """Random text as khronos.toml: loads or fails with ConfigError, never another exception."""
    outcomes: dict[str, int] = {}

    @FUZZ
    @given(text=st.text(max_size=200))
    def case(text: str) -> None:
        outcome = _check_config(text)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    case()
    figures("bad input: config random text", examples=EXAMPLES, outcomes=outcomes)
