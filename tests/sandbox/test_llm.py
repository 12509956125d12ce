"""The Anthropic and OpenAI stand-ins: real shapes, deterministic replies, every fault mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from khronos_cli.sandbox import AnthropicStandIn, OpenAIStandIn
from khronos_cli.sandbox.llm import LLMStandIn
from khronos_cli.sandbox.records import voice_file_bytes
from tests.support import async_wait_for

ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"authorization": "Bearer k"}


def anthropic_request(text: str = "hello") -> dict[str, Any]:
    return {
        "url": "/v1/messages",
        "headers": ANTHROPIC_HEADERS,
        "json": {
            "model": "claude-x",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": text}],
        },
    }


def openai_request(text: str = "hello") -> dict[str, Any]:
    return {
        "url": "/v1/chat/completions",
        "headers": OPENAI_HEADERS,
        "json": {"model": "gpt-x", "messages": [{"role": "user", "content": text}]},
    }


@pytest.fixture(params=["anthropic", "openai"])
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[LLMStandIn]:
    stand_in: LLMStandIn = AnthropicStandIn() if request.param == "anthropic" else OpenAIStandIn()
    stand_in.shutdown_timeout = 60  # closing must not rely on aiohttp cancelling handlers
    async with stand_in:
        yield stand_in


def request_for(stand_in: LLMStandIn, text: str = "hello") -> dict[str, Any]:
    return anthropic_request(text) if stand_in.provider == "anthropic" else openai_request(text)


async def call(stand_in: LLMStandIn, timeout: float = 5.0, **request: Any) -> httpx.Response:
    spec = request or request_for(stand_in)
    async with httpx.AsyncClient(base_url=stand_in.base_url, timeout=timeout) as client:
        return await client.post(**spec)


# -- shapes ---------------------------------------------------------------------------------------


async def test_anthropic_answers_a_message_echoing_the_last_user_turn(
    anthropic: AnthropicStandIn,
) -> None:
    """POST /v1/messages answers the Messages shape with "anthropic echo: <last user text>"."""
    spec = anthropic_request()
    spec["json"]["system"] = "be brief"
    spec["json"]["messages"] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "qual é a capital?"}]},
    ]
    response = await call(anthropic, **spec)
    body = response.json()
    assert response.status_code == 200
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-x"
    assert body["content"] == [{"type": "text", "text": "anthropic echo: qual é a capital?"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["output_tokens"] == 6
    assert anthropic.reply_for("qual é a capital?") == body["content"][0]["text"]
    assert anthropic.calls[-1][1]["system"] == "be brief"


async def test_anthropic_cuts_replies_at_max_tokens(anthropic: AnthropicStandIn) -> None:
    """A reply longer than max_tokens words is cut, with stop_reason max_tokens."""
    spec = anthropic_request("one two three four")
    spec["json"]["max_tokens"] = 3
    body = (await call(anthropic, **spec)).json()
    assert body["content"][0]["text"] == "anthropic echo: one"
    assert body["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(
    ("change", "status", "kind"),
    [
        ({"headers": {"anthropic-version": "2023-06-01"}}, 401, "authentication_error"),
        ({"headers": {"x-api-key": "k"}}, 400, "invalid_request_error"),
        ({"drop": "max_tokens"}, 400, "invalid_request_error"),
        ({"drop": "model"}, 400, "invalid_request_error"),
        ({"messages": []}, 400, "invalid_request_error"),
        ({"messages": [{"role": "system", "content": "x"}]}, 400, "invalid_request_error"),
        ({"stream": "yes"}, 400, "invalid_request_error"),
    ],
)
async def test_anthropic_refuses_bad_requests_in_its_error_shape(
    anthropic: AnthropicStandIn, change: dict[str, Any], status: int, kind: str
) -> None:
    """Missing headers or fields answer Anthropic's {"type": "error", "error": {...}}."""
    spec = anthropic_request()
    if "headers" in change:
        spec["headers"] = change["headers"]
    if "drop" in change:
        del spec["json"][change["drop"]]
    for key in ("messages", "stream"):
        if key in change:
            spec["json"][key] = change[key]
    response = await call(anthropic, **spec)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind


async def test_anthropic_checks_the_configured_key() -> None:
    """With api_key set, another key answers 401."""
    async with AnthropicStandIn(api_key="right") as stand_in:
        response = await call(stand_in)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid x-api-key"


async def test_openai_answers_a_chat_completion(openai: OpenAIStandIn) -> None:
    """POST /v1/chat/completions answers choices[0].message.content = "openai echo: <text>"."""
    response = await call(openai, **openai_request("olá"))
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "openai echo: olá",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 4


async def test_openai_refuses_a_missing_key_in_its_error_shape(openai: OpenAIStandIn) -> None:
    """No Authorization header answers 401 with OpenAI's {"error": {message, type, code}}."""
    spec = openai_request()
    spec["headers"] = {}
    response = await call(openai, **spec)
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key"


async def test_transcription_returns_the_voice_notes_transcript(openai: OpenAIStandIn) -> None:
    """A sandbox voice file transcribes to the transcript it carries; other audio does not."""
    async with httpx.AsyncClient(base_url=openai.base_url, headers=OPENAI_HEADERS) as client:
        voice = await client.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("v.oga", voice_file_bytes("me liga às 5"), "audio/ogg")},
        )
        plain = await client.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1", "response_format": "text"},
            files={"file": ("x.mp3", b"\x00" * 10, "audio/mpeg")},
        )
        missing = await client.post("/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert voice.json() == {"text": "me liga às 5"}
    assert plain.text == "(sandbox audio of 10 bytes)"
    assert missing.status_code == 400
    assert openai.requests["audio.transcriptions"] == 3


# -- modes ----------------------------------------------------------------------------------------


async def test_down_drops_the_connection(provider: LLMStandIn) -> None:
    """In "down" mode the connection closes without an answer."""
    provider.set_mode("down")
    with pytest.raises(httpx.RemoteProtocolError):
        await call(provider)


async def test_errors_answer_503_in_the_providers_shape(provider: LLMStandIn) -> None:
    """In "errors" mode requests answer 503 with the provider's error JSON."""
    provider.set_mode("errors")
    response = await call(provider)
    assert response.status_code == 503
    body = response.json()
    error = body["error"]
    assert error["type"] == ("api_error" if provider.provider == "anthropic" else "server_error")


async def test_errors_429_carries_retry_after(provider: LLMStandIn) -> None:
    """ "errors" with status 429 answers a rate-limit error with a retry-after header."""
    provider.set_mode("errors", status=429, retry_after=3)
    response = await call(provider)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    expected = "rate_limit_error" if provider.provider == "anthropic" else "requests"
    assert response.json()["error"]["type"] == expected


async def test_garbage_is_a_200_that_is_not_json(provider: LLMStandIn) -> None:
    """In "garbage" mode the answer is 200 with a body no JSON parser accepts."""
    provider.set_mode("garbage")
    response = await call(provider)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_slow_answers_after_the_delay(provider: LLMStandIn) -> None:
    """In "slow" mode a client with a shorter timeout gives up; one that waits gets the answer."""
    provider.set_mode("slow", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        await call(provider, timeout=0.05)
    provider.set_mode("slow", delay=0.05)
    response = await call(provider, timeout=5)
    assert response.status_code == 200
    assert provider.outcomes["slow"] == 2


async def test_base_latency_applies_to_ok_requests(provider: LLMStandIn) -> None:
    """The base latency delays every answer, so a client with a shorter timeout gives up."""
    provider.latency = 0.5
    with pytest.raises(httpx.ReadTimeout):
        await call(provider, timeout=0.05)


async def test_hang_never_answers_and_close_is_prompt(provider: LLMStandIn) -> None:
    """In "hang" mode nothing comes back; closing the stand-in releases the hung request."""
    provider.set_mode("hang")
    with pytest.raises(httpx.ReadTimeout):
        await call(provider, timeout=0.05)
    hung = asyncio.create_task(call(provider, timeout=5))
    await async_wait_for(lambda: sum(provider.requests.values()) == 2)
    await asyncio.wait_for(provider.aclose(), timeout=5)  # far below its shutdown_timeout
    with pytest.raises(httpx.TransportError):
        await hung


async def test_a_counted_mode_heals_by_itself(provider: LLMStandIn) -> None:
    """A mode set with count=2 serves two requests, then the stand-in is ok again."""
    provider.set_mode("errors", count=2)
    statuses = [(await call(provider)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert provider.mode == "ok"
    assert dict(provider.outcomes) == {"errors": 2, "ok": 1}


async def test_set_mode_refuses_unknown_modes(provider: LLMStandIn) -> None:
    """set_mode names the modes it knows when given another."""
    with pytest.raises(ValueError, match="expected one of ok, down, slow, hang"):
        provider.set_mode("flaky")  # type: ignore[arg-type]


# -- admin API ------------------------------------------------------------------------------------


async def test_admin_endpoint_sets_the_mode_and_reads_counters(provider: LLMStandIn) -> None:
    """POST /_sandbox/mode switches the mode; GET /_sandbox/stats shows it and the counters."""
    async with httpx.AsyncClient(base_url=provider.base_url) as admin:
        changed = await admin.post(
            "/_sandbox/mode", json={"mode": "errors", "status": 429, "latency": 0.0}
        )
        failed = await call(provider)
        bad = await admin.post("/_sandbox/mode", json={"mode": "sideways"})
        stats = (await admin.get("/_sandbox/stats")).json()
    assert changed.json()["mode"] == "errors"
    assert failed.status_code == 429
    assert bad.status_code == 400
    assert "sideways" in bad.json()["error"]
    assert stats["mode"] == "errors"
    assert stats["provider"] == provider.provider
    assert sum(stats["requests"].values()) == 1
    assert stats["outcomes"] == {"errors": 1}
