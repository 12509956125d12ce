"""The LLM stand-ins' real answer shapes: directive words, caps with honest stop reasons,
latency per output token, error headers, and the Anthropic request checks of today's API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from khronos_cli.sandbox import AnthropicStandIn, OpenAIStandIn, SandboxStack
from khronos_cli.sandbox.llm import LLMStandIn
from khronos_cli.sandbox.replies import REFUSAL_TEXT, tokens

ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"authorization": "Bearer k"}


@pytest.fixture(params=["anthropic", "openai"])
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[LLMStandIn]:
    stand_in: LLMStandIn = AnthropicStandIn() if request.param == "anthropic" else OpenAIStandIn()
    async with stand_in:
        yield stand_in


async def ask_anthropic(
    stand_in: AnthropicStandIn, text: str, max_tokens: int = 1024, **extra: Any
) -> httpx.Response:
    body = {
        "model": "claude-x",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    async with httpx.AsyncClient(base_url=stand_in.base_url, timeout=30) as client:
        return await client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS)


async def ask_openai(stand_in: OpenAIStandIn, text: str, **extra: Any) -> httpx.Response:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": text}], **extra}
    async with httpx.AsyncClient(base_url=stand_in.base_url, timeout=30) as client:
        return await client.post("/v1/chat/completions", json=body, headers=OPENAI_HEADERS)


async def ask(stand_in: LLMStandIn, text: str) -> httpx.Response:
    if isinstance(stand_in, AnthropicStandIn):
        return await ask_anthropic(stand_in, text)
    assert isinstance(stand_in, OpenAIStandIn)
    return await ask_openai(stand_in, text)


async def test_long_is_paragraphs_over_telegrams_limit_and_anthropic_cuts_it(
    anthropic: AnthropicStandIn,
) -> None:
    """#long answers paragraphs of lines; at max_tokens=1024 it is cut there with stop_reason
    max_tokens and is still longer than 4,096 characters; with room it ends its turn."""
    cut = (await ask_anthropic(anthropic, "conte tudo #long")).json()
    full = (await ask_anthropic(anthropic, "conte tudo #long", max_tokens=4000)).json()
    (block,) = cut["content"]
    assert cut["stop_reason"] == "max_tokens"
    assert tokens(block["text"]) == 1024 == cut["usage"]["output_tokens"]
    assert len(block["text"]) > 4096
    text = full["content"][0]["text"]
    assert full["stop_reason"] == "end_turn"
    assert text.startswith("anthropic echo: conte tudo #long\n\n")
    assert 1400 < tokens(text) < 1600 and 8000 < len(text) < 11000
    assert text.count("\n\n") >= 10 and "\n" in text.split("\n\n")[1]
    assert text.startswith(block["text"])


async def test_openai_honours_both_caps_and_answers_in_full_without_one(
    openai: OpenAIStandIn,
) -> None:
    """max_completion_tokens and the legacy max_tokens cut with finish_reason length; with no
    cap the long answer comes in full with finish_reason stop."""
    capped = (await ask_openai(openai, "#long", max_completion_tokens=50)).json()
    legacy = (await ask_openai(openai, "#long", max_tokens=60)).json()
    full = (await ask_openai(openai, "#long")).json()
    short = (await ask_openai(openai, "oi", max_completion_tokens=50)).json()
    bad = await ask_openai(openai, "oi", max_completion_tokens=0)
    assert capped["choices"][0]["finish_reason"] == "length"
    assert capped["usage"]["completion_tokens"] == 50
    assert tokens(legacy["choices"][0]["message"]["content"]) == 60
    assert legacy["choices"][0]["finish_reason"] == "length"
    assert full["choices"][0]["finish_reason"] == "stop"
    assert tokens(full["choices"][0]["message"]["content"]) > 1400
    assert short["choices"][0]["finish_reason"] == "stop"
    assert bad.status_code == 400 and "max_completion_tokens" in bad.json()["error"]["message"]


async def test_an_echo_of_a_long_message_is_longer_than_telegram_allows(
    provider: LLMStandIn,
) -> None:
    """Without a directive the reply is the echo: a 4,090-character message gives a reply over
    4,096 characters."""
    said = ("palavra " * 600)[:4090]
    body = (await ask(provider, said)).json()
    text = (
        body["content"][0]["text"]
        if "content" in body
        else body["choices"][0]["message"]["content"]
    )
    assert text == f"{provider.provider} echo: {said}"
    assert len(text) > 4096


async def test_latency_grows_with_output_tokens(anthropic: AnthropicStandIn) -> None:
    """With token_latency, an answer of 100 tokens takes at least 100 x token_latency while a
    four-token echo stays quick."""
    anthropic.token_latency = 0.01
    started = time.monotonic()
    long = await ask_anthropic(anthropic, "#long", max_tokens=100)
    long_seconds = time.monotonic() - started
    started = time.monotonic()
    await ask_anthropic(anthropic, "oi")
    short_seconds = time.monotonic() - started
    assert long.json()["usage"]["output_tokens"] == 100
    assert long_seconds >= 1.0
    assert short_seconds < 0.9


async def test_blocks_come_in_several_text_blocks(anthropic: AnthropicStandIn) -> None:
    """#blocks answers several text blocks that join into the echo; with thinking enabled a
    thinking block comes first, which a client must skip."""
    plain = (await ask_anthropic(anthropic, "três blocos #blocks por favor")).json()
    thinking = {"type": "enabled", "budget_tokens": 1024}
    thought = (await ask_anthropic(anthropic, "#blocks agora", thinking=thinking)).json()
    assert len(plain["content"]) == 3
    assert {block["type"] for block in plain["content"]} == {"text"}
    joined = "".join(block["text"] for block in plain["content"])
    assert joined == "anthropic echo: três blocos #blocks por favor"
    assert [block["type"] for block in thought["content"]] == ["thinking", "text", "text", "text"]
    assert "".join(b["text"] for b in thought["content"][1:]) == "anthropic echo: #blocks agora"


async def test_refuse_has_each_providers_refusal_shape(
    anthropic: AnthropicStandIn, openai: OpenAIStandIn
) -> None:
    """#refuse: Anthropic stop_reason refusal with empty content; OpenAI content null with the
    refusal sentence and finish_reason stop."""
    claude = (await ask_anthropic(anthropic, "#refuse isto")).json()
    gpt = (await ask_openai(openai, "#refuse isto")).json()["choices"][0]
    assert (claude["content"], claude["stop_reason"]) == ([], "refusal")
    assert claude["stop_details"]["type"] == "refusal"
    assert claude["usage"]["output_tokens"] == 0
    assert gpt["message"]["content"] is None
    assert gpt["message"]["refusal"] == REFUSAL_TEXT
    assert gpt["finish_reason"] == "stop"


async def test_empty_is_an_empty_answer(anthropic: AnthropicStandIn, openai: OpenAIStandIn) -> None:
    """#empty: Anthropic content [] with end_turn; OpenAI content ""."""
    claude = (await ask_anthropic(anthropic, "#empty")).json()
    gpt = (await ask_openai(openai, "#empty")).json()["choices"][0]
    assert (claude["content"], claude["stop_reason"]) == ([], "end_turn")
    assert (gpt["message"]["content"], gpt["finish_reason"]) == ("", "stop")


async def test_error_headers_are_the_real_ones(provider: LLMStandIn) -> None:
    """A 429 carries retry-after and retry-after-ms; a 529 carries no retry-after; with
    should_retry set, errors carry x-should-retry."""
    provider.set_mode("errors", status=429, retry_after=2, should_retry=True)
    limited = await ask(provider, "oi")
    provider.set_mode("errors", status=529)
    overloaded = await ask(provider, "oi")
    provider.set_mode("errors", status=500, should_retry=False)
    broken = await ask(provider, "oi")
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["retry-after-ms"] == "2000"
    assert limited.headers["x-should-retry"] == "true"
    assert overloaded.status_code == 529
    assert "retry-after" not in overloaded.headers and "x-should-retry" not in overloaded.headers
    assert broken.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "user", "content": ""}], "messages: text content blocks must be non-empty"),
        (
            [{"role": "user", "content": [{"type": "text", "text": ""}]}],
            "messages: text content blocks must be non-empty",
        ),
        (
            [{"role": "user", "content": "  \n"}],
            "messages: text content blocks must contain non-whitespace text",
        ),
        (
            [{"role": "user", "content": []}, {"role": "user", "content": "x"}],
            "messages.0: all messages must have non-empty content except for the optional final "
            "assistant message",
        ),
    ],
)
async def test_anthropic_refuses_empty_text(
    anthropic: AnthropicStandIn, messages: list[dict[str, Any]], message: str
) -> None:
    """Empty or blank text, or an empty turn, answers 400 with the real API's message."""
    body = {"model": "m", "max_tokens": 10, "messages": messages}
    async with httpx.AsyncClient(base_url=anthropic.base_url) as client:
        response = await client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS)
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}
    assert response.json()["request_id"].startswith("req_")


async def test_anthropic_accepts_any_turn_order(anthropic: AnthropicStandIn) -> None:
    """As today's API does, a first assistant turn and consecutive user turns are accepted (they
    are merged), and the last user turn is answered."""
    body = {
        "model": "m",
        "max_tokens": 50,
        "messages": [
            {"role": "assistant", "content": "Olá! Como posso ajudar?"},
            {"role": "user", "content": "primeiro"},
            {"role": "user", "content": "segundo"},
        ],
    }
    async with httpx.AsyncClient(base_url=anthropic.base_url) as client:
        response = await client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS)
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == "anthropic echo: segundo"


async def test_token_latency_is_set_from_the_stack_and_the_admin_api() -> None:
    """SandboxStack(token_latency=...) sets it on both LLM stand-ins; POST /_sandbox/mode
    changes it and GET /_sandbox/stats reads it back."""
    async with SandboxStack(token_latency=0.002) as stack, httpx.AsyncClient() as client:
        assert stack.anthropic.token_latency == stack.openai.token_latency == 0.002
        url = f"{stack.openai_base_url}/_sandbox"
        changed = await client.post(f"{url}/mode", json={"token_latency": 0.5})
        bad = await client.post(f"{url}/mode", json={"token_latency": -1})
        stats = (await client.get(f"{url}/stats")).json()
    assert changed.status_code == 200 and stats["token_latency"] == 0.5
    assert stats["mode"] == "ok"
    assert bad.status_code == 400
