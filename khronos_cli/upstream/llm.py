"""The LLM clients: Anthropic's Messages API and OpenAI's chat completions and transcription.

Both take the same conversation shape (``[{"role": "user" | "assistant", "content": str}]``) and
return plain text, so the bot can fall back from one to the other without knowing either. An error
answer becomes :class:`UpstreamError` with the status, the provider's error type, and the
``retry-after`` header in seconds, so the guard can hold the breaker and halt the limiter.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, TypedDict

import httpx

from khronos_cli.config import Secret
from khronos_cli.errors import UpstreamError
from khronos_cli.upstream.base import Guard, UpstreamClient, parse_retry_after

__all__ = ["AnthropicClient", "OpenAIClient", "Turn"]

ANTHROPIC_VERSION = "2023-06-01"


class Turn(TypedDict):
    role: str
    content: str


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
            message = str(error.get("message") or message)[:200]
        raise UpstreamError(
            self.dependency,
            f"answered {response.status_code} {kind}: {message}",
            status=response.status_code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            code=kind,
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
    ) -> None:
        headers = {"x-api-key": api_key.reveal(), "anthropic-version": ANTHROPIC_VERSION}
        super().__init__(
            base_url, headers=headers, timeout=timeout, transport=transport, guard=guard
        )
        self.model = model
        self.max_tokens = max_tokens

    async def reply(
        self, turns: Sequence[Turn], *, system: str | None = None, key: Hashable | None = None
    ) -> str:
        """The assistant's answer to the conversation ``turns`` (last one from the user)."""
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": t["role"], "content": t["content"]} for t in turns],
        }
        if system:
            payload["system"] = system

        async def attempt() -> str:
            response = await self._send("POST", "/v1/messages", json=payload)
            self._raise_for_error(response)
            blocks = self._field(self._json(response), "content")
            if not isinstance(blocks, list):
                raise UpstreamError(self.dependency, "answered an unexpected shape", status=502)
            texts = [b.get("text", "") for b in blocks if isinstance(b, dict)]
            return "".join(t for t in texts if isinstance(t, str)).strip()

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
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        transcription_guard: Guard | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key.reveal()}"}
        super().__init__(
            base_url, headers=headers, timeout=timeout, transport=transport, guard=guard
        )
        self.model = model
        self.transcription_model = transcription_model
        self._transcription_guard = transcription_guard or guard

    async def reply(
        self, turns: Sequence[Turn], *, system: str | None = None, key: Hashable | None = None
    ) -> str:
        """The assistant's answer to the conversation ``turns`` (last one from the user)."""
        messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        messages += [{"role": t["role"], "content": t["content"]} for t in turns]
        payload = {"model": self.model, "messages": messages}

        async def attempt() -> str:
            response = await self._send("POST", "/v1/chat/completions", json=payload)
            self._raise_for_error(response)
            content = self._field(self._json(response), "choices", 0, "message", "content")
            if not isinstance(content, str):
                raise UpstreamError(self.dependency, "answered an unexpected shape", status=502)
            return content.strip()

        return await self._guarded(attempt, key=key)

    async def transcribe(
        self, audio: bytes, *, filename: str = "voice.ogg", key: Hashable | None = None
    ) -> str:
        """The text of a voice note."""

        async def attempt() -> str:
            response = await self._send(
                "POST",
                "/v1/audio/transcriptions",
                data={"model": self.transcription_model},
                files={"file": (filename, audio, "audio/ogg")},
            )
            self._raise_for_error(response)
            text = self._field(self._json(response), "text")
            if not isinstance(text, str):
                raise UpstreamError(self.dependency, "answered an unexpected shape", status=502)
            return text.strip()

        return await self._guarded(attempt, key=key, guard=self._transcription_guard)
