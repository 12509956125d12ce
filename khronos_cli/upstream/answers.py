"""A streamed answer, event by event, into the :class:`Answer` a whole answer would have made.

**Anthropic** (what ``anthropic-sdk-python``'s ``accumulate_event`` keeps of it): the text of the
``text`` content blocks (``content_block_start`` then ``text_delta``\\ s, by ``index``), joined in
order; ``message_delta``'s ``stop_reason`` (``max_tokens``: cut, ``refusal``: refused); done at
``message_stop``. ``ping`` and other blocks (thinking, its signature) carry nothing we keep. An
``error`` event is the API failing after it began to answer: :class:`UpstreamError` with the
status Anthropic gives that error type (``overloaded_error`` 529, ``api_error`` 500, ...).

**OpenAI** (the SDK's ``accumulate_delta`` over ``choices[0].delta``): ``content`` and
``refusal`` fragments concatenated, ``finish_reason`` (``length``: cut); done at ``[DONE]``. A
chunk ``{"error": {...}}`` is the API failing mid-stream (the SDK raises ``APIError``).

Either way the answer is the same as the non-streamed call's, text stripped, and a stream that
ends before its stop reason is an outage (``incomplete``), never half an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from khronos_cli.errors import UpstreamError
from khronos_cli.redaction import Scrubber

__all__ = ["Answer", "AnthropicAnswer", "OpenAIAnswer", "StreamedAnswer"]

# The HTTP status each documented error type comes with (Anthropic's errors page; OpenAI's types
# and codes), for an error that arrives inside a 200 stream.
_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@dataclass(frozen=True)
class Answer:
    """What a model said: ``text`` (maybe empty), ``cut`` at the output cap, or ``refused``."""

    text: str
    cut: bool = False
    refused: bool = False


class StreamedAnswer:
    """One provider's fold of its events; ``done`` once the stream said it is over."""

    def __init__(self, dependency: str, scrub: Scrubber) -> None:
        self.dependency = dependency
        self.scrub = scrub
        self.done = False
        self.stop: str | None = None

    def feed(self, event: bytes | None, data: bytes) -> None:
        raise NotImplementedError

    def result(self) -> Answer:
        raise NotImplementedError

    def answer(self) -> Answer:
        """The answer, or UpstreamError when the stream ended before its stop reason."""
        if self.stop is None:
            raise UpstreamError(
                self.dependency, "the stream ended before the answer did", code="incomplete"
            )
        return self.result()

    def _load(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except ValueError:
            raise UpstreamError(
                self.dependency, "streamed an event that is not JSON", status=502, code="garbage"
            ) from None

    def _failed(self, error: object, fallback: str) -> UpstreamError:
        kind, message = fallback, "an error in the stream"
        if isinstance(error, dict):
            kind = str(error.get("type") or error.get("code") or kind)
            message = self.scrub(str(error.get("message") or message))[:200]
        status = _STATUS.get(kind, 500)
        return UpstreamError(
            self.dependency,
            f"answered {status} {kind} mid-stream: {message}",
            status=status,
            code=kind,
        )

    def _garbage(self) -> UpstreamError:
        return UpstreamError(
            self.dependency, "streamed an unexpected shape", status=502, code="garbage"
        )


class AnthropicAnswer(StreamedAnswer):
    """Messages API events into an :class:`Answer`."""

    def __init__(self, dependency: str, scrub: Scrubber) -> None:
        super().__init__(dependency, scrub)
        self._texts: dict[int, list[str]] = {}

    def feed(self, event: bytes | None, data: bytes) -> None:
        if event == b"ping":
            return
        body = self._load(data)
        if not isinstance(body, dict):
            raise self._garbage()
        kind = body.get("type")
        try:
            if kind == "content_block_delta":
                delta = body["delta"]
                if delta.get("type") == "text_delta" and body["index"] in self._texts:
                    self._texts[body["index"]].append(str(delta["text"]))
            elif kind == "content_block_start":
                block = body["content_block"]
                if block.get("type") == "text":
                    self._texts[body["index"]] = [str(block.get("text") or "")]
            elif kind == "message_delta":
                self.stop = str(body["delta"].get("stop_reason") or "")
            elif kind == "message_stop":
                self.done = True
            elif kind == "error" or event == b"error":
                raise self._failed(body.get("error"), "api_error")
        except (KeyError, TypeError, AttributeError):
            raise self._garbage() from None

    def result(self) -> Answer:
        text = "".join("".join(self._texts[index]) for index in sorted(self._texts))
        return Answer(text.strip(), cut=self.stop == "max_tokens", refused=self.stop == "refusal")


class OpenAIAnswer(StreamedAnswer):
    """Chat completion chunks into an :class:`Answer`."""

    def __init__(self, dependency: str, scrub: Scrubber) -> None:
        super().__init__(dependency, scrub)
        self._content: list[str] | None = None
        self._refusal: list[str] | None = None

    def feed(self, event: bytes | None, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        body = self._load(data)
        if not isinstance(body, dict):
            raise self._garbage()
        if body.get("error"):
            raise self._failed(body["error"], "server_error")
        try:
            for choice in body["choices"]:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                content, refusal = delta.get("content"), delta.get("refusal")
                if isinstance(content, str):
                    if self._content is None:
                        self._content = []
                    self._content.append(content)
                if isinstance(refusal, str):
                    if self._refusal is None:
                        self._refusal = []
                    self._refusal.append(refusal)
                if choice.get("finish_reason"):
                    self.stop = str(choice["finish_reason"])
        except (KeyError, TypeError, AttributeError):
            raise self._garbage() from None

    def result(self) -> Answer:
        cut = self.stop == "length"
        if self._content is None and self._refusal is not None:
            return Answer("".join(self._refusal).strip(), cut=cut, refused=True)
        return Answer("".join(self._content or ()).strip(), cut=cut)
