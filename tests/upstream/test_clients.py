"""The API clients against the sandbox stand-ins: real shapes, errors mapped, tokens never shown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, TypeVar

import pytest

from khronos_cli.config import Rate, Secret
from khronos_cli.errors import UpstreamError
from khronos_cli.sandbox import FloodLimits, SandboxStack
from khronos_cli.upstream.base import parse_retry_after
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient
from khronos_cli.upstream.telegram import PRIORITY_REPLY, TelegramClient

T = TypeVar("T")


class RecordingGuard:
    """A guard that runs the attempt and remembers how it was called and what it raised."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []

    async def __call__(
        self,
        attempt: Callable[[], Awaitable[T]],
        /,
        *,
        key: Hashable | None = None,
        priority: int = 5,
        timeout: float | None = None,
    ) -> T:
        self.calls.append({"key": key, "priority": priority, "timeout": timeout})
        try:
            return await attempt()
        except BaseException as exc:
            self.errors.append(exc)
            raise


@pytest.fixture
async def stack() -> AsyncIterator[SandboxStack]:
    limits = FloodLimits(per_chat=Rate(1, 60.0), per_group=None, per_bot=None)
    async with SandboxStack(flood_limits=limits) as running:
        yield running


@pytest.fixture
async def telegram(stack: SandboxStack) -> AsyncIterator[TelegramClient]:
    client = TelegramClient(Secret(stack.token), stack.telegram_base_url, guard=RecordingGuard())
    yield client
    await client.aclose()


async def test_updates_and_replies_round_trip(
    stack: SandboxStack, telegram: TelegramClient
) -> None:
    """getUpdates returns pushed messages; the offset confirms them; replies carry reply_to."""
    message_id = stack.telegram.push_text(chat_id=42, user_id=7, text="hello")
    updates = await telegram.get_updates(timeout=0)
    assert [u["message"]["text"] for u in updates] == ["hello"]
    assert await telegram.get_updates(updates[-1]["update_id"] + 1, timeout=0) == []
    assert stack.telegram.pending_update_count == 0
    sent = await telegram.send_message(42, "hi <b>there</b>", reply_to_message_id=message_id)
    assert sent["chat"]["id"] == 42
    delivery = stack.telegram.deliveries[-1]
    assert (delivery.text, delivery.reply_to_message_id, delivery.parse_mode) == (
        "hi <b>there</b>",
        message_id,
        None,
    )
    assert isinstance(telegram._guard, RecordingGuard)
    assert telegram._guard.calls[-1] == {"key": 42, "priority": PRIORITY_REPLY, "timeout": None}


async def test_flood_429_carries_retry_after(stack: SandboxStack, telegram: TelegramClient) -> None:
    """Telegram's 429 is an outage UpstreamError with parameters.retry_after, seen by the guard."""
    await telegram.send_message(5, "one")
    with pytest.raises(UpstreamError) as caught:
        await telegram.send_message(5, "two")
    error = caught.value
    assert error.status == 429 and error.is_outage
    assert error.retry_after is not None and 1 <= error.retry_after <= 60
    assert isinstance(telegram._guard, RecordingGuard) and telegram._guard.errors == [error]


async def test_wrong_token_is_not_an_outage_and_never_shown(stack: SandboxStack) -> None:
    """A 401 is our mistake (not an outage), and neither token appears in the error."""
    token = "123456:WRONG-secret-token"
    async with TelegramClient(Secret(token), stack.telegram_base_url) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.send_message(1, "x")
    assert caught.value.status == 401 and not caught.value.is_outage
    assert "WRONG-secret" not in str(caught.value) and stack.token not in str(caught.value)


async def test_unreachable_telegram_is_a_network_outage(stack: SandboxStack) -> None:
    """A refused connection is an outage with no status, and the URL (with the token) is hidden."""
    base = stack.telegram_base_url
    await stack.telegram.aclose()
    async with TelegramClient(Secret(stack.token), base) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.get_updates(timeout=0)
    assert caught.value.status is None and caught.value.is_outage
    assert stack.token not in str(caught.value) and caught.value.__cause__ is None


async def test_voice_note_is_downloaded_and_transcribed(
    stack: SandboxStack, telegram: TelegramClient
) -> None:
    """getFile + download + OpenAI transcription give back what the user said."""
    stack.telegram.push_voice(chat_id=9, user_id=9, transcript="what time is it")
    update = (await telegram.get_updates(timeout=0))[0]
    meta = await telegram.get_file(update["message"]["voice"]["file_id"])
    audio = await telegram.download_file(meta["file_path"])
    async with OpenAIClient(Secret(stack.openai_api_key), stack.openai_base_url) as openai:
        assert await openai.transcribe(audio) == "what time is it"


async def test_anthropic_and_openai_reply(stack: SandboxStack) -> None:
    """Both LLM clients send the conversation and return the assistant's text."""
    turns = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "ping"},
    ]
    async with AnthropicClient(Secret(stack.anthropic_api_key), stack.anthropic_base_url) as claude:
        assert (await claude.reply(turns, system="be brief")).text == stack.anthropic.reply_for(
            "ping"
        )
    async with OpenAIClient(Secret(stack.openai_api_key), stack.openai_base_url) as gpt:
        assert (await gpt.reply(turns)).text == stack.openai.reply_for("ping")


@pytest.mark.parametrize(
    ("mode", "options", "status", "retry_after", "outage"),
    [
        ("errors", {"status": 503}, 503, None, True),
        ("errors", {"status": 429, "retry_after": 7}, 429, 7.0, True),
        ("garbage", {}, 502, None, True),
        ("down", {}, None, None, True),
    ],
)
async def test_llm_failures_map_to_upstream_errors(
    stack: SandboxStack,
    mode: str,
    options: dict[str, Any],
    status: int | None,
    retry_after: float | None,
    outage: bool,
) -> None:
    """Each failure mode of the stand-ins becomes an UpstreamError with status and retry_after."""
    stack.anthropic.set_mode(mode, **options)
    async with AnthropicClient(Secret(stack.anthropic_api_key), stack.anthropic_base_url) as claude:
        with pytest.raises(UpstreamError) as caught:
            await claude.reply([{"role": "user", "content": "hi"}])
    error = caught.value
    assert error.dependency == "anthropic-api" and error.status == status
    assert error.retry_after == retry_after and error.is_outage is outage
    assert stack.anthropic_api_key not in str(error)


def test_parse_retry_after() -> None:
    """Retry-After takes delta-seconds or an HTTP date; junk gives None."""
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0
