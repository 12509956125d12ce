"""The LLM stand-ins' streams (``"stream": true``): the event shapes the real APIs send, folded the
way the official SDKs fold them into exactly the non-streamed answer; stall and stream_error."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest

from khronos_cli.sandbox import AnthropicStandIn, OpenAIStandIn

ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"authorization": "Bearer k"}
TEXTS = ["hello there", "conte tudo #long", "in pieces #blocks", "no #refuse", "x #empty"]
Json = dict[str, Any]


def anthropic_body(text: str, **extra: Any) -> Json:
    return {
        "model": "m",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def openai_body(text: str, **extra: Any) -> Json:
    messages = [{"role": "user", "content": text}]
    return {"model": "m", "max_completion_tokens": 1024, "messages": messages, **extra}


async def post(base: str, path: str, body: Json, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return await client.post(path, json=body, headers=headers)


def events(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(event name, data) of each event of a whole event-stream body."""
    assert response.headers["content-type"].startswith("text/event-stream")
    found = []
    for block in response.text.split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append((fields.get("event"), fields["data"]))
    return found


def accumulate_anthropic(stream: list[tuple[str | None, str]]) -> Json:
    """The message, folded as anthropic-sdk-python's ``accumulate_event`` folds it."""
    message: Json = {}
    for name, data in stream:
        event = json.loads(data)
        assert name == event["type"]  # the SDK reads `event:`; the data repeats it
        if event["type"] == "message_start":
            message = event["message"]
        elif event["type"] == "content_block_start":
            message["content"].append(dict(event["content_block"]))
        elif event["type"] == "content_block_delta":
            block, delta = message["content"][event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
        elif event["type"] == "message_delta":
            message.update(event["delta"])
            message["usage"]["output_tokens"] = event["usage"]["output_tokens"]
    return message


@pytest.mark.parametrize("text", TEXTS)
async def test_anthropic_stream_folds_into_the_whole_message(
    anthropic: AnthropicStandIn, text: str
) -> None:
    """message_start, blocks of start/deltas/stop, a ping, message_delta, message_stop; folded,
    they are the non-streamed message (content, stop_reason, stop_details, usage)."""
    base = anthropic.base_url
    whole = (await post(base, "/v1/messages", anthropic_body(text), ANTHROPIC_HEADERS)).json()
    streamed = await post(
        base, "/v1/messages", anthropic_body(text, stream=True), ANTHROPIC_HEADERS
    )
    stream = events(streamed)
    names = [name for name, _ in stream]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("ping") == 1
    assert ("content_block_delta" in names) is bool(whole["content"])
    start = json.loads(stream[0][1])["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    folded = accumulate_anthropic(stream)
    assert {**folded, "id": None} == {**whole, "id": None}
    assert streamed.headers["request-id"].startswith("req_sandbox_")


async def test_anthropic_thinking_block_streams_its_deltas(anthropic: AnthropicStandIn) -> None:
    """With thinking enabled, #blocks opens with a thinking block (thinking_delta,
    signature_delta) and folds into the non-streamed content."""
    body = anthropic_body("x #blocks", thinking={"type": "enabled", "budget_tokens": 1024})
    base = anthropic.base_url
    whole = (await post(base, "/v1/messages", body, ANTHROPIC_HEADERS)).json()
    streamed = await post(base, "/v1/messages", {**body, "stream": True}, ANTHROPIC_HEADERS)
    folded = accumulate_anthropic(events(streamed))
    assert folded["content"] == whole["content"] and folded["content"][0]["type"] == "thinking"


@pytest.mark.parametrize("text", TEXTS)
async def test_openai_stream_folds_into_the_whole_completion(
    openai: OpenAIStandIn, text: str
) -> None:
    """chat.completion.chunk lines: role first, content (or refusal) deltas, finish_reason, the
    usage chunk when asked for, [DONE]; folded, the non-streamed message and usage."""
    base, path = openai.base_url, "/v1/chat/completions"
    whole = (await post(base, path, openai_body(text), OPENAI_HEADERS)).json()
    options = {"stream": True, "stream_options": {"include_usage": True}}
    stream = events(await post(base, path, openai_body(text, **options), OPENAI_HEADERS))
    assert all(name is None for name, _ in stream) and stream[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in stream[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    *deltas, usage = chunks
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert all(c["usage"] is None for c in deltas) and deltas[0]["choices"][0]["delta"]["role"]
    message: Json = {}
    for chunk in deltas:  # the SDK's accumulate_delta: strings concatenate, the rest is kept
        for key, value in chunk["choices"][0]["delta"].items():
            old = message.get(key)
            message[key] = old + value if isinstance(old, str) and key != "role" else value
    choice = whole["choices"][0]
    assert message == choice["message"]
    assert deltas[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_stall_sends_the_opening_then_nothing(
    anthropic: AnthropicStandIn, openai: OpenAIStandIn, provider: str
) -> None:
    """Mode stall: the headers and the opening event come, then nothing until the stand-in
    closes (a stream that stalls mid-way)."""
    stand_in = anthropic if provider == "anthropic" else openai
    stand_in.set_mode("stall")
    if provider == "anthropic":
        path, body, headers = "/v1/messages", anthropic_body("hi", stream=True), ANTHROPIC_HEADERS
    else:
        path, body, headers = "/v1/chat/completions", openai_body("hi", stream=True), OPENAI_HEADERS
    received = b""
    async with (
        httpx.AsyncClient(base_url=stand_in.base_url, timeout=30) as client,
        client.stream("POST", path, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        with contextlib.suppress(httpx.HTTPError):
            async for chunk in response.aiter_raw():
                received += chunk
                if received.endswith(b"\n\n"):
                    await stand_in.aclose()
    (opening,) = [block for block in received.split(b"\n\n") if block]
    data = json.loads(opening.split(b"data: ", 1)[1])
    if provider == "anthropic":
        assert data["type"] == "message_start"
    else:
        assert data["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize(
    ("provider", "status", "kind"),
    [("anthropic", 529, "overloaded_error"), ("openai", 503, "server_error")],
)
async def test_stream_error_breaks_the_stream_with_the_providers_error_event(
    anthropic: AnthropicStandIn, openai: OpenAIStandIn, provider: str, status: int, kind: str
) -> None:
    """Mode stream_error: a 200 stream that began, then Anthropic's `event: error` /
    OpenAI's `data: {"error"}`, and no end (no message_stop, no [DONE])."""
    stand_in = anthropic if provider == "anthropic" else openai
    stand_in.set_mode("stream_error", status=status)
    text = "several words so that the stream breaks half way"
    if provider == "anthropic":
        response = await post(
            stand_in.base_url, "/v1/messages", anthropic_body(text, stream=True), ANTHROPIC_HEADERS
        )
    else:
        response = await post(
            stand_in.base_url,
            "/v1/chat/completions",
            openai_body(text, stream=True),
            OPENAI_HEADERS,
        )
    assert response.status_code == 200
    stream = events(response)
    name, data = stream[-1]
    error = json.loads(data)
    assert error["error"]["type"] == kind and len(stream) > 2
    if provider == "anthropic":
        assert name == "error" and error["type"] == "error"
        assert "message_stop" not in [n for n, _ in stream]
    else:
        assert name is None and "[DONE]" not in [d for _, d in stream]
