"""Streamed LLM answers against the real stand-ins: the same Answer as a whole answer, a hang or a
stall caught by the stream's own limits, errors mid-stream, and injected outages still tripping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from khronos_cli.config import Secret
from khronos_cli.errors import UpstreamError
from khronos_cli.sandbox import AnthropicStandIn, OpenAIStandIn
from khronos_cli.upstream.answers import Answer
from khronos_cli.upstream.faults import FaultInjector
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient
from khronos_cli.upstream.sse import EventReader
from khronos_cli.upstream.transport import FaultTransport, Wire

KINDS = ["plain words here", "conte tudo #long", "in pieces #blocks", "no #refuse", "x #empty"]
LIMITS = {"first_byte_timeout": 0.5, "stall_timeout": 0.5}


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicStandIn]:
    async with AnthropicStandIn(api_key="k") as stand_in:
        yield stand_in


@pytest.fixture
async def openai() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn(api_key="k") as stand_in:
        yield stand_in


def claude(stand_in: AnthropicStandIn, **options: Any) -> AnthropicClient:
    return AnthropicClient(Secret("k"), stand_in.base_url, **{**LIMITS, **options})


def gpt(stand_in: OpenAIStandIn, **options: Any) -> OpenAIClient:
    return OpenAIClient(Secret("k"), stand_in.base_url, **{**LIMITS, **options})


def llm(
    provider: str, anthropic: AnthropicStandIn, openai: OpenAIStandIn, **options: Any
) -> AnthropicClient | OpenAIClient:
    return claude(anthropic, **options) if provider == "anthropic" else gpt(openai, **options)


async def whole_anthropic(stand_in: AnthropicStandIn, text: str) -> Answer:
    """What the non-streamed answer to ``text`` says, read from its JSON."""
    body = {"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": text}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=stand_in.base_url) as http:
        message = (await http.post("/v1/messages", json=body, headers=headers)).json()
    texts = [b["text"] for b in message["content"] if b["type"] == "text"]
    stop = message["stop_reason"]
    return Answer("".join(texts).strip(), cut=stop == "max_tokens", refused=stop == "refusal")


async def whole_openai(stand_in: OpenAIStandIn, text: str) -> Answer:
    body = {
        "model": "m",
        "max_completion_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
    }
    async with httpx.AsyncClient(base_url=stand_in.base_url) as http:
        completion = (
            await http.post(
                "/v1/chat/completions", json=body, headers={"authorization": "Bearer k"}
            )
        ).json()
    choice = completion["choices"][0]
    message, cut = choice["message"], choice["finish_reason"] == "length"
    if message["content"] is None:
        return Answer(message["refusal"].strip(), cut=cut, refused=True)
    return Answer(message["content"].strip(), cut=cut)


@pytest.mark.parametrize("text", KINDS)
async def test_anthropic_streamed_answer_is_the_whole_answer(
    anthropic: AnthropicStandIn, text: str
) -> None:
    """Every answer kind (#long cut at max_tokens, #blocks, #refuse, #empty) streams into the
    Answer the non-streamed call gives, and the request asked for a stream."""
    async with claude(anthropic) as client:
        streamed = await client.reply([{"role": "user", "content": text}])
    assert streamed == await whole_anthropic(anthropic, text)
    assert anthropic.calls[0][1]["stream"] is True
    if "#long" in text:
        assert streamed.cut and len(streamed.text) > 4096


@pytest.mark.parametrize("text", KINDS)
async def test_openai_streamed_answer_is_the_whole_answer(openai: OpenAIStandIn, text: str) -> None:
    """Every answer kind (#long cut by length, #refuse's refusal text, #empty) streams into the
    Answer the non-streamed call gives."""
    async with gpt(openai) as client:
        streamed = await client.reply([{"role": "user", "content": text}])
    assert streamed == await whole_openai(openai, text)
    assert openai.calls[0][1]["stream"] is True
    assert streamed.refused is ("#refuse" in text)


async def test_paced_tokens_arrive_in_many_chunks_and_still_make_the_answer(
    anthropic: AnthropicStandIn,
) -> None:
    """Tokens paced one by one (each its own chunk on the wire) make the same answer."""
    anthropic.token_latency = 0.002
    text = "one two three four five six seven eight nine ten eleven twelve"
    async with claude(anthropic) as client:
        streamed = await client.reply([{"role": "user", "content": text}])
    assert streamed == Answer(anthropic.reply_for(text))


async def test_a_hang_is_a_timeout_at_the_first_byte_limit(anthropic: AnthropicStandIn) -> None:
    """No headers at all (mode hang): UpstreamError after first_byte_timeout, an outage."""
    anthropic.set_mode("hang")
    async with claude(anthropic, timeout=60.0) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.reply([{"role": "user", "content": "hi"}])
    error = caught.value
    assert error.is_outage and error.status is None and error.code == "timeout"
    assert "no first event within 0.5s" in str(error)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_stall_mid_stream_is_a_timeout_at_the_stall_limit(
    anthropic: AnthropicStandIn, openai: OpenAIStandIn, provider: str
) -> None:
    """Headers and the opening event, then silence (mode stall): UpstreamError after
    stall_timeout, an outage, even with a first-byte limit longer than the test."""
    stand_in = anthropic if provider == "anthropic" else openai
    stand_in.set_mode("stall")
    async with llm(provider, anthropic, openai, first_byte_timeout=60.0) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.reply([{"role": "user", "content": "hi there"}])
    error = caught.value
    assert error.is_outage and error.code == "timeout" and "stalled" in str(error)


@pytest.mark.parametrize(
    ("provider", "status", "kind"),
    [
        ("anthropic", 529, "overloaded_error"),
        ("anthropic", 500, "api_error"),
        ("openai", 503, "server_error"),
    ],
)
async def test_an_error_event_mid_stream_is_an_upstream_error_of_its_type(
    anthropic: AnthropicStandIn, openai: OpenAIStandIn, provider: str, status: int, kind: str
) -> None:
    """Anthropic's `event: error` and OpenAI's `data: {"error"}` after the stream began raise
    UpstreamError with the provider's error type and the status that type comes with."""
    stand_in = anthropic if provider == "anthropic" else openai
    stand_in.set_mode("stream_error", status=status)
    async with llm(provider, anthropic, openai) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.reply([{"role": "user", "content": "a few words to stream"}])
    error = caught.value
    expected = 529 if kind == "overloaded_error" else 500
    assert (error.code, error.status, error.is_outage) == (kind, expected, True)
    assert "mid-stream" in str(error) and error.dependency == f"{provider}-api"


@pytest.mark.parametrize(
    ("options", "status", "retry_after", "should_retry", "outage"),
    [
        ({"status": 429, "retry_after": 3}, 429, 3.0, None, True),
        ({"status": 529}, 529, None, None, True),
        ({"status": 503, "should_retry": False}, 503, None, False, False),
    ],
)
async def test_errors_before_the_stream_keep_their_headers(
    anthropic: AnthropicStandIn,
    options: dict[str, Any],
    status: int,
    retry_after: float | None,
    should_retry: bool | None,
    outage: bool,
) -> None:
    """An HTTP error instead of a stream reads retry-after-ms and x-should-retry as before."""
    anthropic.set_mode("errors", **options)
    async with claude(anthropic) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.reply([{"role": "user", "content": "hi"}])
    error = caught.value
    assert (error.status, error.retry_after, error.should_retry) == (
        status,
        retry_after,
        should_retry,
    )
    assert error.is_outage is outage


@pytest.mark.parametrize(
    ("mode", "options", "status", "code"),
    [
        ("timeout", {}, None, "timeout"),
        ("down", {}, None, "network"),
        ("errors", {"status": 503}, 503, "overloaded_error"),
    ],
)
async def test_injected_outages_still_trip_streamed_calls(
    anthropic: AnthropicStandIn,
    mode: str,
    options: dict[str, Any],
    status: int | None,
    code: str,
) -> None:
    """`khronos outage` modes through the real transport: a timeout outage is caught by the
    first-byte limit (not the 60 s read timeout), down and errors fail as before."""
    injector = FaultInjector()
    injector.start("anthropic-api", mode, **options)
    transport = FaultTransport(Wire(), injector, "anthropic-api")
    async with claude(anthropic, timeout=60.0, transport=transport) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.reply([{"role": "user", "content": "hi"}])
    error = caught.value
    assert error.is_outage and (error.status, error.code) == (status, code)


async def test_a_slow_outage_below_the_limit_still_answers(anthropic: AnthropicStandIn) -> None:
    """A slow outage that delays the headers less than first_byte_timeout changes nothing else."""
    injector = FaultInjector()
    injector.start("anthropic-api", "slow", latency=0.05)
    transport = FaultTransport(Wire(), injector, "anthropic-api")
    async with claude(anthropic, transport=transport) as client:
        answer = await client.reply([{"role": "user", "content": "hi"}])
    assert answer == Answer(anthropic.reply_for("hi"))


def test_event_reader_follows_the_event_stream_rules() -> None:
    """Events split anywhere across chunks, CRLF/CR/LF line ends, comments, multi-line data and
    an unfinished last event come out as the SDKs' decoder makes them."""
    wire = (
        b": comment\r\nevent: ping\r\ndata: {}\r\n\r\n"
        b"data: line one\ndata: line two\n\n"
        b'event: message_stop\rdata:{"type": "message_stop"}\r\r'
        b"id: 7\nretry: 10\n\n"
        b"data: unfinished"
    )
    for size in (1, 2, 3, 7, len(wire)):
        reader = EventReader()
        events = []
        for start in range(0, len(wire), size):
            events += reader.feed(wire[start : start + size])
        assert events == [
            (b"ping", b"{}"),
            (None, b"line one\nline two"),
            (b"message_stop", b'{"type": "message_stop"}'),
        ]
