"""The LLM clients: Anthropic's Messages API and OpenAI's chat completions and transcription.

Answers are **streamed** (``"stream": true``, read as Server-Sent Events: :mod:`.sse`,
:mod:`.answers`), so a hanging API is told from a long answer within seconds: the response's
headers and first event must come within ``first_byte_timeout`` (5 s by default), and no more than
``stall_timeout`` (10 s; Anthropic sends ``ping`` events while it thinks) may pass between two
events. Either limit raises :class:`UpstreamError` with no status (a timeout: an outage the
breaker counts), while the breaker's own timeout still caps the whole answer. The bot gets the
whole answer at once, the same :class:`Answer` the non-streamed call gave.

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
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypedDict

import httpx
import orjson

from khronos_cli.config import Secret
from khronos_cli.errors import UpstreamError
from khronos_cli.redaction import Scrubber
from khronos_cli.upstream.answers import Answer, AnthropicAnswer, OpenAIAnswer, StreamedAnswer
from khronos_cli.upstream.base import Guard, UpstreamClient, parse_retry_after
from khronos_cli.upstream.sse import EventReader
from khronos_cli.upstream.transport import Response

__all__ = ["Answer", "AnthropicClient", "OpenAIClient", "Turn", "transcription_timeout"]

ANTHROPIC_VERSION = "2023-06-01"
TRANSCRIPTION_BASE = 15.0  # seconds for a voice note of no length: upload and first answer
TRANSCRIPTION_PER_SECOND = 0.1  # and this much per second of audio (Whisper: ~20x real time)
FIRST_BYTE_TIMEOUT = 5.0  # seconds to the response's headers and first event
STALL_TIMEOUT = 10.0  # seconds between two events of a streamed answer
# A model writes a token every 10-30 ms, each its own small chunk on the wire. Waking for each costs
# more CPU than the rest of the call (~150 us a chunk on the 2-core bench machine): a stream that
# trickles (chunks under TRICKLE bytes) is read at most every READ_EVERY seconds instead, which
# halves the CPU of a long answer; the bot sends the whole answer anyway, 50 ms later at most.
READ_EVERY = 0.05
TRICKLE = 4096


class Turn(TypedDict):
    role: str
    content: str


def transcription_timeout(duration: float) -> float:
    """How long transcribing a voice note of ``duration`` seconds may take."""
    return TRANSCRIPTION_BASE + TRANSCRIPTION_PER_SECOND * max(0.0, duration)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (milliseconds) first, then ``retry-after``, as the SDKs read them."""
    milliseconds = parse_retry_after(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    return parse_retry_after(headers.get("retry-after"))


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry", "").strip().lower()
    return True if value == "true" else False if value == "false" else None


class _LLMClient(UpstreamClient):
    first_byte_timeout = FIRST_BYTE_TIMEOUT
    stall_timeout = STALL_TIMEOUT

    async def _stream(self, path: str, payload: dict[str, Any], answer: StreamedAnswer) -> Answer:
        """POST ``payload`` asking for a stream and fold its events into ``answer``.

        UpstreamError when the headers and first event take over ``first_byte_timeout``, when
        ``stall_timeout`` passes between two events, or when the stream ends unfinished. The
        stream is read to its end (the connection goes back to the pool); a trickle is read in
        batches (:data:`READ_EVERY`)."""
        loop = asyncio.get_running_loop()
        reader = EventReader()
        begun = False
        try:
            async with asyncio.timeout(self.first_byte_timeout) as limit:
                response = await self._open("POST", path, payload)
                try:
                    if response.status_code >= 400 or not response.headers.get(
                        "content-type", ""
                    ).startswith("text/event-stream"):
                        await response.aread()
                        self._raise_for_error(response)
                        raise UpstreamError(
                            self.dependency,
                            f"answered HTTP {response.status_code} without an event stream",
                            status=502,
                            code="garbage",
                        )
                    async for chunk in response.aiter_raw():
                        events = reader.feed(chunk)
                        if events:
                            for event, data in events:
                                answer.feed(event, data)
                            begun = True
                            if answer.done:  # only the stream's end is left to read
                                continue
                            limit.reschedule(loop.time() + self.stall_timeout)
                        if not answer.done and len(chunk) < TRICKLE:
                            await asyncio.sleep(READ_EVERY)  # let a trickle of tokens pile up
                finally:
                    await response.aclose()
        except TimeoutError:
            if answer.done:  # the answer is whole; only the connection's end was late
                return answer.answer()
            if begun:
                message = f"stalled: no event for {self.stall_timeout:g}s"
            else:
                message = f"sent no first event within {self.first_byte_timeout:g}s"
            raise UpstreamError(self.dependency, message, code="timeout") from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        return answer.answer()

    def _raise_for_error(self, response: Response) -> None:
        if response.status_code < 400:
            return
        kind, message = "http_error", f"HTTP {response.status_code}"
        try:
            body = orjson.loads(response.content)
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
        first_byte_timeout: float = FIRST_BYTE_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
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
        self.first_byte_timeout = first_byte_timeout
        self.stall_timeout = stall_timeout

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
            "stream": True,
        }
        if system:
            payload["system"] = system

        async def attempt() -> Answer:
            if sending is not None:
                sending.set()
            events = AnthropicAnswer(self.dependency, self._scrub)
            return await self._stream("/v1/messages", payload, events)

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
        first_byte_timeout: float = FIRST_BYTE_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
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
        self.first_byte_timeout = first_byte_timeout
        self.stall_timeout = stall_timeout
        self._transcription_guard = transcription_guard or guard

    async def reply(
        self, turns: Sequence[Turn], *, system: str | None = None, key: Hashable | None = None
    ) -> Answer:
        """The assistant's answer to the conversation ``turns`` (last one from the user)."""
        messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        messages += [{"role": t["role"], "content": t["content"]} for t in turns]
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.max_tokens is not None:
            payload["max_completion_tokens"] = self.max_tokens

        async def attempt() -> Answer:
            events = OpenAIAnswer(self.dependency, self._scrub)
            return await self._stream("/v1/chat/completions", payload, events)

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
