"""A loopback stand-in for the Anthropic Messages API (``POST /v1/messages``).

Requests are checked the way the real API checks them, so a bot bug shows up in the sandbox, not
in production: ``x-api-key`` (401 ``authentication_error``), ``anthropic-version`` (400),
``model``, ``max_tokens``, a non-empty ``messages`` list of ``user``/``assistant`` turns, and no
empty text: an empty text block (or string) is ``"messages: text content blocks must be
non-empty"``, a whitespace-only one ``"messages: text content blocks must contain non-whitespace
text"``, an empty content list ``"messages.N: all messages must have non-empty content except for
the optional final assistant message"`` (400 ``invalid_request_error``; the texts are the API's,
as quoted in anthropics/claude-code#59812, #23369 and #6774).

The *order* of turns is not checked, because the real API no longer does: consecutive ``user`` or
``assistant`` turns are combined into one, and a first ``assistant`` turn is accepted. Sources: the
``messages`` parameter of ``anthropic-sdk-python`` (``types/message_create_params.py``:
"Consecutive `user` or `assistant` turns in your request will be combined into a single turn")
and anthropics/anthropic-sdk-typescript#622 (an ``assistant`` first turn succeeds on the
first-party API; only Bedrock still answers ``"messages: first message must use the "user"
role"``).

The answer is the real shape: a ``message`` with ``content`` blocks, ``stop_reason`` ``end_turn``
(``max_tokens`` when the reply had to be cut to ``max_tokens`` tokens, ``refusal`` for
``#refuse``) and ``usage``; see :mod:`.replies` for the shapes directive words ask for.
``"stream": true`` gets the same answer as Server-Sent Events (:mod:`.streams`). Errors use
Anthropic's ``{"type": "error", "error": {"type", "message"}, "request_id"}``. Modes, latency and
counters: :mod:`.llm`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from khronos_cli.sandbox.llm import (
    APIError,
    LLMStandIn,
    content_text,
    last_user_text,
    streamed,
)
from khronos_cli.sandbox.replies import cut, plan_reply, split_blocks, tokens
from khronos_cli.sandbox.streams import EventStream, anthropic_stream

__all__ = ["AnthropicStandIn"]

_ROLES = {"user", "assistant"}
_INVALID = "invalid_request_error"
Json = dict[str, Any]


class AnthropicStandIn(LLMStandIn):
    """The Anthropic Messages API on a loopback port; base URL as the SDK wants it (no /v1)."""

    provider = "anthropic"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        self._admin_routes(app)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "messages", self._answer)

    def _check_auth(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key", "")
        if not key:
            raise APIError(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            raise APIError(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            raise APIError(400, _INVALID, "anthropic-version: header is required")

    def _error_body(self, error: APIError) -> Json:
        return {
            "type": "error",
            "error": {"type": error.kind, "message": error.message},
            "request_id": f"req_sandbox_error_{self._next_id():06d}",
        }

    async def _answer(self, request: web.Request) -> tuple[web.StreamResponse | EventStream, int]:
        body = await self._json_body(request, "messages")
        stream = streamed(body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, _INVALID, "model: Field required")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise APIError(400, _INVALID, "max_tokens: Field required (>= 1)")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, _INVALID, "messages: at least one message required")
        _check_messages(messages)
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise APIError(400, _INVALID, "system: Input should be a valid string")
        said = last_user_text(messages)
        reply = plan_reply(said, self.reply_for(said))
        text, was_cut = cut(reply.text, max_tokens)
        stop_reason = "max_tokens" if was_cut else "end_turn"
        content: list[Json] = [{"type": "text", "text": text}]
        extra: Json = {}
        if reply.directive == "refuse":
            content, stop_reason = [], "refusal"
            extra["stop_details"] = {"type": "refusal", "category": None, "explanation": None}
        elif reply.directive == "empty":
            content = []
        elif reply.directive == "blocks":
            content = [{"type": "text", "text": piece} for piece in split_blocks(text)]
            if _thinking(body):
                content.insert(0, _thinking_block(said))
        output_tokens = tokens(text) if content else 0
        number = self._next_id()
        prompt = " ".join(content_text(m.get("content")) for m in messages)
        message = {
            "id": f"msg_sandbox_{number:06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            **extra,
            "usage": {
                "input_tokens": tokens(prompt) + tokens(_system_text(system)),
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        headers = {"request-id": f"req_sandbox_{number:06d}"}
        if stream:
            return anthropic_stream(message, headers), output_tokens
        return web.json_response(message, headers=headers), output_tokens


def _check_messages(messages: list[Any]) -> None:
    """Roles and non-empty text, as the real API checks them (not the turns' order)."""
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise APIError(
                400, _INVALID, f"messages.{index}.role: Input should be 'user' or 'assistant'"
            )
        content = message.get("content")
        if isinstance(content, str):
            _check_text(content)
        elif isinstance(content, list):
            if not content and not (index == last and role == "assistant"):
                raise APIError(
                    400,
                    _INVALID,
                    f"messages.{index}: all messages must have non-empty content except for "
                    "the optional final assistant message",
                )
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text":
                    _check_text(block.get("text"))
        else:
            raise APIError(400, _INVALID, f"messages.{index}.content: Field required")


def _check_text(text: object) -> None:
    if not isinstance(text, str) or not text:
        raise APIError(400, _INVALID, "messages: text content blocks must be non-empty")
    if not text.strip():
        raise APIError(
            400, _INVALID, "messages: text content blocks must contain non-whitespace text"
        )


def _thinking(body: Json) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _system_text(system: object) -> str:
    return system if isinstance(system, str) else content_text(system)


def _thinking_block(said: str) -> Json:
    return {
        "type": "thinking",
        "thinking": f"The user wrote {len(said)} characters; I will echo them.",
        "signature": "c2FuZGJveC10aGlua2luZy1zaWduYXR1cmU=",
    }
