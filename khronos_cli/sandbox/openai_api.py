"""A loopback stand-in for the OpenAI API: chat completions and audio transcriptions.

- ``POST /v1/chat/completions``: ``Authorization: Bearer <key>``, ``model``, a non-empty
  ``messages`` list; answers a ``chat.completion`` whose ``choices[0].message.content`` is
  :meth:`reply_for` the last user message. The cap ``max_completion_tokens`` (or the legacy
  ``max_tokens``) cuts it with ``finish_reason: "length"``; with no cap it comes in full.
  Directive words (:mod:`.replies`): ``#refuse`` gives ``content: null`` with ``refusal`` set,
  ``#empty`` gives ``content: ""``, ``#long`` a long answer. ``"stream": true`` gets the same
  answer as ``chat.completion.chunk`` events (:mod:`.streams`).
- ``POST /v1/audio/transcriptions``: a multipart form with ``file`` and ``model``; answers
  ``{"text": ...}`` (or the bare text with ``response_format=text``). A sandbox voice note carries
  its transcript (:func:`~khronos_cli.sandbox.records.transcript_of`), so the voice round trip
  Telegram -> getFile -> download -> transcription gives back what :meth:`push_voice` was told.
  Other audio "transcribes" to a fixed sentence naming its size.

Errors use OpenAI's ``{"error": {"message", "type", "param", "code"}}``. Modes and counters:
:mod:`.llm`. The base URL is the host root (the bot appends ``/v1/...``), like the Anthropic one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from khronos_cli.sandbox.llm import (
    APIError,
    LLMStandIn,
    content_text,
    last_user_text,
    now,
    streamed,
)
from khronos_cli.sandbox.records import transcript_of
from khronos_cli.sandbox.replies import REFUSAL_TEXT, cut, plan_reply, tokens
from khronos_cli.sandbox.streams import EventStream, openai_stream

__all__ = ["OpenAIStandIn"]

_ROLES = {"system", "developer", "user", "assistant", "tool"}
# Anthropic-style kinds (shared by the base class) -> OpenAI's (type, code).
_KINDS: dict[str, tuple[str, str | None]] = {
    "rate_limit_error": ("requests", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "invalid_request_error": ("invalid_request_error", None),
}


class OpenAIStandIn(LLMStandIn):
    """The OpenAI chat completions and transcription endpoints on a loopback port."""

    provider = "openai"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcription)
        self._admin_routes(app)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat.completions", self._answer_chat)

    async def _transcription(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "audio.transcriptions", self._answer_transcription)

    def _check_auth(self, request: web.Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(
                401,
                "authentication_error",
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if self.api_key is not None and key.strip() != self.api_key:
            raise APIError(401, "authentication_error", "Incorrect API key provided.")

    def _error_body(self, error: APIError) -> dict[str, Any]:
        kind, code = _KINDS.get(error.kind, ("invalid_request_error", None))
        return {"error": {"message": error.message, "type": kind, "param": None, "code": code}}

    async def _answer_chat(
        self, request: web.Request
    ) -> tuple[web.StreamResponse | EventStream, int]:
        body = await self._json_body(request, "chat.completions")
        stream = streamed(body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "invalid_request_error", "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(
                400,
                "invalid_request_error",
                "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            )
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in _ROLES:
                raise APIError(
                    400, "invalid_request_error", f"Invalid value: {role!r} at messages[{index}]"
                )
        said = last_user_text(messages)
        reply = plan_reply(said, self.reply_for(said))
        text, was_cut = cut(reply.text, _cap(body))
        answer: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if reply.directive == "refuse":
            answer.update(content=None, refusal=REFUSAL_TEXT)
            text = REFUSAL_TEXT
        prompt = " ".join(content_text(m.get("content")) for m in messages)
        number = self._next_id()
        completion = {
            "id": f"chatcmpl-sandbox-{number:06d}",
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": answer,
                    "logprobs": None,
                    "finish_reason": "length" if was_cut else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": tokens(prompt),
                "completion_tokens": tokens(text),
                "total_tokens": tokens(prompt) + tokens(text),
            },
            "system_fingerprint": "fp_sandbox",
        }
        headers = {"x-request-id": f"req_sandbox_{number:06d}"}
        if stream:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            return openai_stream(completion, headers, usage=usage), tokens(text)
        return web.json_response(completion, headers=headers), tokens(text)

    async def _answer_transcription(self, request: web.Request) -> tuple[web.StreamResponse, int]:
        if not request.content_type.startswith("multipart/"):
            raise APIError(400, "invalid_request_error", "expected a multipart/form-data body")
        form = await request.post()
        upload = form.get("file")
        model = form.get("model")
        if not isinstance(upload, FileField):
            raise APIError(400, "invalid_request_error", "file: a file upload is required")
        if not isinstance(model, str) or not model:
            raise APIError(400, "invalid_request_error", "you must provide a model parameter")
        data = upload.file.read()
        self.calls.append(("audio.transcriptions", {"model": model, "bytes": len(data)}))
        self._next_id()
        text = transcript_of(data)
        if text is None:
            text = f"(sandbox audio of {len(data)} bytes)"
        if form.get("response_format") == "text":
            return web.Response(text=text), tokens(text)
        return web.json_response({"text": text}), tokens(text)


def _cap(body: dict[str, Any]) -> int | None:
    """``max_completion_tokens``, else the legacy ``max_tokens``; None: no cap."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise APIError(
                400, "invalid_request_error", f"Invalid type for '{key}': expected an integer"
            )
        if value < 1:
            raise APIError(
                400,
                "invalid_request_error",
                f"Invalid '{key}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
            )
        return value
    return None
