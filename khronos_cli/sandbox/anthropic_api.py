"""A loopback stand-in for the Anthropic Messages API (``POST /v1/messages``).

Requests are checked the way the real API checks them — ``x-api-key`` (401
``authentication_error``), ``anthropic-version`` (400), ``model``, ``max_tokens``, a non-empty
``messages`` list of ``user``/``assistant`` turns (400 ``invalid_request_error``) — so a bot bug
shows up in the sandbox, not in production. The answer is the real shape: a ``message`` with one
``text`` content block, ``stop_reason`` ``end_turn`` (or ``max_tokens`` when the reply had to be
cut to ``max_tokens`` words) and ``usage``. Errors use Anthropic's
``{"type": "error", "error": {"type", "message"}}``. Modes and counters: :mod:`.llm`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from khronos_cli.sandbox.llm import APIError, LLMStandIn, last_user_text, tokens

__all__ = ["AnthropicStandIn"]

_ROLES = {"user", "assistant"}


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
            raise APIError(400, "invalid_request_error", "anthropic-version: header is required")

    def _error_body(self, error: APIError) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error.kind, "message": error.message}}

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request, "messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "invalid_request_error", "model: Field required")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise APIError(400, "invalid_request_error", "max_tokens: Field required (>= 1)")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "invalid_request_error", "messages: at least one message required")
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in _ROLES:
                raise APIError(
                    400,
                    "invalid_request_error",
                    f"messages.{index}.role: Input should be 'user' or 'assistant'",
                )
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise APIError(400, "invalid_request_error", "system: Input should be a valid string")
        text = self.reply_for(last_user_text(messages))
        words = text.split(" ")
        stop_reason = "end_turn"
        if len(words) > max_tokens:
            text, stop_reason = " ".join(words[:max_tokens]), "max_tokens"
        number = self._next_id()
        prompt = " ".join(str(m.get("content", "")) for m in messages) + " " + str(system or "")
        return web.json_response(
            {
                "id": f"msg_sandbox_{number:06d}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": tokens(prompt),
                    "output_tokens": tokens(text),
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
            headers={"request-id": f"req_sandbox_{number:06d}"},
        )
