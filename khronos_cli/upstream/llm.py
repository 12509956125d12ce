"""The LLM clients: Anthropic's Messages API and OpenAI's chat completions and transcription.

Both take the same conversation shape (``[{"role": "user" | "assistant", "content": str}]``) and
return an :class:`Answer`: the text, and whether the model cut it at the output cap (Anthropic's
``stop_reason: max_tokens``, OpenAI's ``finish_reason: length``) or refused (Anthropic's
``stop_reason: refusal``, OpenAI's ``content: null`` with ``refusal``). An empty or refused answer
is an answer, not an outage: the call reached the model and it spoke, so the breaker counts a
success and the bot decides what to do with it (ask the other provider).

An error answer becomes :class:`UpstreamError` with the status, the provider's error type, the
wait it asked for (``retry-after-ms``, else ``retry-after``) and its ``x-should-retry`` verdict,
so the guard can hold the breaker and halt the limiter, exactly as the official SDKs read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx

from khronos_cli.config import Secret
from khronos_cli.errors import UpstreamError
from khronos_cli.redaction import Scrubber
from khronos_cli.upstream.base import Guard, UpstreamClient, parse_retry_after

__all__ = ["Answer", "AnthropicClient", "OpenAIClient", "Turn", "transcription_timeout"]

ANTHROPIC_VERSION = "2023-06-01"
TRANSCRIPTION_BASE = 15.0  # seconds for a voice note of no length: upload and first answer
TRANSCRIPTION_PER_SECOND = 0.1  # and this much per second of audio (Whisper: ~20x real time)


class Turn(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class Answer:
    """What a model said: ``text`` (maybe empty), ``cut`` at the output cap, or ``refused``."""

    text: str
    cut: bool = False
    refused: bool = False


def transcription_timeout(duration: float) -> float:
    """How long transcribing a voice note of ``duration`` seconds may take."""
    return TRANSCRIPTION_BASE + TRANSCRIPTION_PER_SECOND * max(0.0, duration)


def _retry_after(headers: httpx.Headers) -> float | None:
    """``retry-after-ms`` (milliseconds) first, then ``retry-after``, as the SDKs read them."""
    milliseconds = parse_retry_after(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    return parse_retry_after(headers.get("retry-after"))


def _should_retry(headers: httpx.Headers) -> bool | None:
    value = headers.get("x-should-retry", "").strip().lower()
    return True if value == "true" else False if value == "false" else None


class _LLMClient(UpstreamClient):
    def _raise_for_error(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        kind, message = "http_error", f"HTTP {response.status_code}"
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            kind = str(error.get("type") or error.get("code") or kind)
            message = self._scrub(str(error.get("message") or message))[:200]
        raise UpstreamError(
            self.dependency,
            f"answered {response.status_code} {kind}: {message}",
            status=response.status_code,
            retry_after=_retry_after(response.headers),
            code=kind,
            should_retry=_should_retry(response.headers),
        )

    def _field(self, body: Any, *path: str | int) -> Any:
        """``body[p0][p1]...``, or UpstreamError when the shape is not the documented one."""
        value = body
        try:
            for step in path:
                value = value[step]
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(
                self.dependency, "answered an unexpected shape", status=502, code="garbage"
            ) from None
        return value


class AnthropicClient(_LLMClient):
    """``POST /v1/messages``."""

    dependency = "anthropic-api"

    def __init__(
        self,
        api_key: Secret,
        base_url: str = "https://api.anthropic.com",
        *,
        model: str = "claude-sonnet-4-5",
        max_tokens: int = 1024,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        scrub: Scrubber | None = None,
    ) -> None:
        headers = {"x-api-key": api_key.reveal(), "anthropic-version": ANTHROPIC_VERSION}
        super().__init__(
            base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            guard=guard,
            scrub=scrub or Scrubber([api_key]),
        )
        self.model = model
        self.max_tokens = max_tokens

    async def reply(
        self,
        turns: Sequence[Turn],
        *,
        system: str | None = None,
        key: Hashable | None = None,
        sending: asyncio.Event | None = None,
    ) -> Answer:
        """The assistant's answer to the conversation ``turns`` (last one from the user).
        ``sending`` is set when the request leaves (the limiter's wait is over)."""
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": t["role"], "content": t["content"]} for t in turns],
        }
        if system:
            payload["system"] = system

        async def attempt() -> Answer:
            if sending is not None:
                sending.set()
            response = await self._send("POST", "/v1/messages", json=payload)
            self._raise_for_error(response)
            body = self._json(response)
            blocks = self._field(body, "content")
            if not isinstance(blocks, list):
                raise UpstreamError(self.dependency, "answered an unexpected shape", status=502)
            texts = [
                b.get("text") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
            ]
            stop = body.get("stop_reason") if isinstance(body, dict) else None
            return Answer(
                "".join(t for t in texts if isinstance(t, str)).strip(),
                cut=stop == "max_tokens",
                refused=stop == "refusal",
            )

        return await self._guarded(attempt, key=key)


class OpenAIClient(_LLMClient):
    """``POST /v1/chat/completions`` and ``POST /v1/audio/transcriptions``."""

    dependency = "openai-api"

    def __init__(
        self,
        api_key: Secret,
        base_url: str = "https://api.openai.com",
        *,
        model: str = "gpt-4o-mini",
        transcription_model: str = "whisper-1",
        max_tokens: int | None = 1024,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        transcription_guard: Guard | None = None,
        scrub: Scrubber | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key.reveal()}"}
        super().__init__(
            base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            guard=guard,
            scrub=scrub or Scrubber([api_key]),
        )
        self.model = model
        self.transcription_model = transcription_model
        self.max_tokens = max_tokens
        self._transcription_guard = transcription_guard or guard

    async def reply(
        self, turns: Sequence[Turn], *, system: str | None = None, key: Hashable | None = None
    ) -> Answer:
        """The assistant's answer to the conversation ``turns`` (last one from the user)."""
        messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        messages += [{"role": t["role"], "content": t["content"]} for t in turns]
        payload: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.max_tokens is not None:
            payload["max_completion_tokens"] = self.max_tokens

        async def attempt() -> Answer:
            response = await self._send("POST", "/v1/chat/completions", json=payload)
            self._raise_for_error(response)
            choice = self._field(self._json(response), "choices", 0)
            message = self._field(choice, "message")
            if not isinstance(choice, dict) or not isinstance(message, dict):
                raise UpstreamError(self.dependency, "answered an unexpected shape", status=502)
            content, refusal = message.get("content"), message.get("refusal")
            cut = choice.get("finish_reason") == "length"
            if content is None and isinstance(refusal, str):
                return Answer(refusal.strip(), cut=cut, refused=True)
            if content is None:
                return Answer("", cut=cut)
            if not isinstance(content, str):
                raise UpstreamError(self.dependency, "answered an unexpected shape", status=502)
            return Answer(content.strip(), cut=cut)

        return await self._guarded(attempt, key=key)

    async def transcribe(
        self,
        audio: bytes,
        *,
        duration: float = 0.0,
        filename: str = "voice.ogg",
        key: Hashable | None = None,
    ) -> str:
        """The text of a voice note (maybe empty: nothing was heard). The call's deadline grows
        with the note's ``duration`` (:func:`transcription_timeout`); the breaker's timeout caps
        it."""
        deadline = transcription_timeout(duration)

        async def attempt() -> str:
            try:
                async with asyncio.timeout(deadline):
                    response = await self._send(
                        "POST",
                        "/v1/audio/transcriptions",
                        data={"model": self.transcription_model},
                        files={"file": (filename, audio, "audio/ogg")},
                    )
            except TimeoutError:
                raise UpstreamError(
                    self.dependency, f"transcription timed out after {deadline:g}s"
                ) from None
            self._raise_for_error(response)
            text = self._field(self._json(response), "text")
            if not isinstance(text, str):
                raise UpstreamError(self.dependency, "answered an unexpected shape", status=502)
            return text.strip()

        return await self._guarded(attempt, key=key, guard=self._transcription_guard)
