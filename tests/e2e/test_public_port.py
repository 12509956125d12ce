"""The public port beyond loopback: a bearer token on the write endpoints, refused at start
without one, and a probe port of its own for /health, /ready and /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.instance import FAST_CONFIG, Instance, khronos

TOKEN = "k8s-secret-token-0123456789abcdef"
BEYOND = FAST_CONFIG + '[http]\nhost = "0.0.0.0"\n'


def test_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    """`[http] host = "0.0.0.0"` and no KHRONOS_HTTP_TOKEN: exit 78 with one line naming
    http.host and the token, before anything starts."""
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    (state / "khronos.toml").write_text(BEYOND)
    done = khronos("run", "--sandbox", "--port", "0", "--state-dir", str(state), timeout=60)
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "http.host" in lines[0] and "KHRONOS_HTTP_TOKEN" in lines[0]
    assert not (state / "supervisor.json").exists()


def test_write_endpoints_require_the_bearer_token(
    make_instance: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bound to 0.0.0.0 with a token (from KHRONOS_HTTP_TOKEN_FILE): POST /chat and POST
    /messages answer 401 JSON without it or with a wrong one, and serve with it; reads and
    probes need none. The token is never echoed."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.setenv("KHRONOS_HTTP_TOKEN_FILE", str(tmp_path / "token"))
    instance: Instance = make_instance(config=BEYOND).start()
    requests = {
        "/chat": {"message": "hi"},
        "/messages": {"chat_id": 42, "text": "from another service"},
    }
    for path, body in requests.items():
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-wrong-token"},
            {"Authorization": TOKEN},
        ):
            refused = instance.public("POST", path, json=body, headers=headers)
            assert refused.status_code == 401, (path, headers, refused.text)
            assert refused.json()["error"]["status"] == 401 and TOKEN not in refused.text
            assert refused.headers["www-authenticate"].startswith("Bearer")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    chat = instance.public("POST", "/chat", json=requests["/chat"], headers=auth)
    assert chat.status_code == 200 and chat.json()["answered_by"] == "anthropic", chat.text
    sent = instance.public("POST", "/messages", json=requests["/messages"], headers=auth)
    assert sent.status_code == 202, sent.text
    for path in ("/health", "/ready", "/metrics", "/breakers/status", "/limiter/stats"):
        assert instance.public("GET", path).status_code == 200, path


def test_loopback_enforces_a_token_when_one_is_set(
    make_instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On loopback the token is optional, but once set POST /chat requires it."""
    monkeypatch.setenv("KHRONOS_HTTP_TOKEN", TOKEN)
    instance: Instance = make_instance().start()
    assert instance.public("POST", "/chat", json={"message": "hi"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert instance.public("POST", "/chat", json={"message": "hi"}, headers=auth).status_code == 200


def test_probe_port_serves_health_ready_and_metrics(make_instance: Any) -> None:
    """`[http] probe_port` serves /health, /ready and /metrics on a port of its own (and
    nothing else); `khronos status --json` names it."""
    instance: Instance = make_instance(config=FAST_CONFIG + "[http]\nprobe_port = 0\n").start()
    probe = instance.status()["probe_port"]
    assert isinstance(probe, int) and probe not in (0, instance.status()["http_port"])
    base = f"http://127.0.0.1:{probe}"
    assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "alive"}
    assert httpx.get(f"{base}/ready", timeout=10).json() == {"ready": True}
    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200 and "khronos_ready 1.0" in metrics.text
    assert httpx.post(f"{base}/chat", json={"message": "hi"}, timeout=10).status_code in (404, 405)
    assert httpx.get(f"{base}/breakers/status", timeout=10).status_code == 404
    shown = instance.khronos("status")
    assert f"(probes on :{probe})" in shown.stdout, shown.stdout
    assert f'"probe_port":{probe}' in instance.khronos("status", "--json").stdout
