"""The public port: routes, 4xx JSON for bad input, 429/503 with Retry-After, the webhook secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from khronos_cli.errors import JobDroppedError
from khronos_cli.runtime.http import WEBHOOK_PATH, PublicServer


class API:
    """A worker stand-in: fixed snapshots, a chat that can be 'open', a queue that can be full."""

    def __init__(self) -> None:
        self.ready = True
        self.webhook_secret: str | None = "s3cret-token"
        self.open = False
        self.full = False
        self.sent: list[tuple[int, str]] = []
        self.updates: list[dict[str, Any]] = []
        self.chat_users: list[str] = []

    def breakers(self) -> dict[str, Any]:
        state, trial = ("open", 12.5) if self.open else ("closed", None)
        return {"anthropic-api": {"state": state, "stats": {}, "next_trial_in": trial}}

    def limiters(self) -> dict[str, Any]:
        return {"telegram": {"executing": 0, "queued": 0, "done": 3, "dropped": 0}}

    def metrics(self) -> bytes:
        return b"# TYPE khronos_up gauge\nkhronos_up 1\n"

    async def chat(self, message: str, *, user: str) -> dict[str, str]:
        self.chat_users.append(user)
        if self.open:  # neither model answered: the chain's last resort
            return {"reply": "IA indisponível agora.", "answered_by": "fallback"}
        return {"reply": f"echo: {message}", "answered_by": "anthropic"}

    async def send(self, chat_id: int, text: str) -> dict[str, Any]:
        if self.full:
            raise JobDroppedError("telegram", chat_id, 3.2)
        self.sent.append((chat_id, text))
        return {"id": len(self.sent)}

    async def webhook(self, update: dict[str, Any]) -> None:
        self.updates.append(update)


@pytest.fixture
async def served() -> AsyncIterator[tuple[API, httpx.AsyncClient]]:
    api = API()
    server = PublicServer(api, port=0)
    await server.startup()
    assert server.port != 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        yield api, http
    await server.aclose()


async def test_reads_and_health(served: tuple[API, httpx.AsyncClient]) -> None:
    """Snapshots, health, readiness and metrics answer with their documented shapes."""
    api, http = served
    assert (await http.get("/breakers/status")).json()["anthropic-api"]["state"] == "closed"
    assert (await http.get("/limiter/stats")).json()["telegram"]["done"] == 3
    assert (await http.get("/health")).json() == {"status": "alive"}
    assert (await http.get("/ready")).json() == {"ready": True}
    api.ready = False
    not_ready = await http.get("/ready")
    assert not_ready.status_code == 503 and not_ready.json() == {"ready": False}
    metrics = await http.get("/metrics")
    assert (
        metrics.headers["content-type"].startswith("text/plain")
        and b"khronos_up 1" in metrics.content
    )


async def test_chat_answers_and_503s_while_open(served: tuple[API, httpx.AsyncClient]) -> None:
    """/chat returns the reply and who answered; when only the fallback text is left, 503 JSON
    with it and a Retry-After of the breaker's next trial."""
    api, http = served
    assert (await http.post("/chat", json={"message": "hi"})).json() == {
        "reply": "echo: hi",
        "answered_by": "anthropic",
    }
    await http.post("/chat", json={"message": "hi", "user": 42})
    assert api.chat_users == ["chat:127.0.0.1", "chat:42"]  # one limiter group per caller
    api.open = True
    answer = await http.post("/chat", json={"message": "hi"})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "13"
    assert answer.json()["answered_by"] == "fallback" and "error" in answer.json()
    assert answer.json()["reply"] == "IA indisponível agora."


async def test_messages_queue_and_429_when_full(served: tuple[API, httpx.AsyncClient]) -> None:
    """/messages answers 202 once queued, 429 with a computed Retry-After when the queue is full."""
    api, http = served
    queued = await http.post("/messages", json={"chat_id": 5, "text": "hello"})
    assert queued.status_code == 202 and queued.json() == {"queued": True, "id": 1}
    api.full = True
    refused = await http.post("/messages", json={"chat_id": 5, "text": "again"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "4"
    assert api.sent == [(5, "hello")]


@pytest.mark.parametrize(
    ("method", "path", "content", "status"),
    [
        ("POST", "/chat", b"{not json", 400),
        ("POST", "/chat", b"[1]", 400),
        ("POST", "/chat", b"{}", 400),
        ("POST", "/chat", b'{"message": 5}', 400),
        ("POST", "/chat", b'{"message": "x", "user": [1]}', 400),
        ("POST", "/chat", b'{"message": "' + b"x" * 5000 + b'"}', 400),
        ("POST", "/messages", b'{"chat_id": "5", "text": "x"}', 400),
        ("POST", "/messages", b'{"chat_id": true, "text": "x"}', 400),
        ("POST", "/messages", b'{"chat_id": 5}', 400),
        ("POST", "/messages", b"x" * (300 * 1024), 413),
        ("GET", "/chat", b"", 405),
        ("DELETE", "/health", b"", 405),
        ("GET", "/nope", b"", 404),
    ],
)
async def test_bad_input_gets_4xx_json_and_the_server_keeps_serving(
    served: tuple[API, httpx.AsyncClient], method: str, path: str, content: bytes, status: int
) -> None:
    """Malformed JSON, wrong fields, oversize bodies and wrong methods: 4xx JSON; still serving."""
    api, http = served
    answer = await http.request(
        method, path, content=content, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status
    assert answer.json()["error"]["status"] == status
    assert api.sent == [] and (await http.get("/health")).status_code == 200


async def test_webhook_checks_the_secret(served: tuple[API, httpx.AsyncClient]) -> None:
    """The webhook refuses a wrong or missing secret (403) and takes the right one."""
    api, http = served
    update = {"update_id": 1, "message": {"text": "hi"}}
    header = "X-Telegram-Bot-Api-Secret-Token"
    wrong = await http.post(WEBHOOK_PATH, json=update, headers={header: "guess"})
    assert wrong.status_code == 403 and "s3cret" not in wrong.text
    assert (await http.post(WEBHOOK_PATH, json=update)).status_code == 403
    right = await http.post(WEBHOOK_PATH, json=update, headers={header: "s3cret-token"})
    assert right.status_code == 200 and api.updates == [update]
    api.webhook_secret = None
    assert (await http.post(WEBHOOK_PATH, json=update)).status_code == 404


async def test_close_stops_listening() -> None:
    """After aclose the port refuses connections (step 1 of the stop)."""
    server = PublicServer(API(), port=0)
    await server.startup()
    port = server.port
    await server.aclose()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
