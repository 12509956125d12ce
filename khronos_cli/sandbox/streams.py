"""What the LLM stand-ins send for ``"stream": true``: Server-Sent Events, as the real APIs do.

**Anthropic** (``POST /v1/messages``, the event sequence of its streaming docs and of
``anthropic-sdk-python``'s ``accumulate_event``): ``message_start`` (the message with empty
``content`` and ``stop_reason: null``), then per content block ``content_block_start``,
``content_block_delta`` (``text_delta``; a ``thinking`` block's ``thinking_delta`` and
``signature_delta``) and ``content_block_stop``, a ``ping`` after the first block opens (or after
``message_start`` when there is none), ``message_delta`` (``stop_reason`` with ``stop_details``
for a refusal, and the output ``usage``) and ``message_stop``. Each event is ``event: <type>`` and
``data: <json>`` whose ``type`` repeats the name. A failure after the stream began is an
``event: error`` whose data is ``{"type": "error", "error": {"type", "message"}}``.

**OpenAI** (``POST /v1/chat/completions``): ``data: <chat.completion.chunk>`` lines without event
names: the first chunk's delta carries ``role`` (and ``content: ""``, or ``content: null`` with
``refusal: ""`` for a refusal), then one chunk per token (``content`` or ``refusal``), then an
empty delta with ``finish_reason``; with ``stream_options.include_usage`` every chunk has
``usage: null`` and a last chunk with no choices carries the usage; then ``data: [DONE]``. A
failure after the stream began is ``data: {"error": {...}}`` and the stream ends (the SDK raises).

Text streams one token (a word with the whitespace before it) per delta, so a stand-in's
``token_latency`` paces the deltas as it paces a whole answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventStream", "anthropic_stream", "openai_stream", "pieces"]

Json = dict[str, Any]
_PIECE = re.compile(r"\s*\S+")


@dataclass
class EventStream:
    """An answer to stream: encoded events, each marked when it carries a token (and so waits
    ``token_latency``); the first ``opening`` events open the stream (what a ``stall`` sends)."""

    events: list[tuple[bytes, bool]] = field(default_factory=list)
    opening: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    named: bool = True  # Anthropic names its events; OpenAI sends bare data lines

    def add(self, data: Json, *, token: bool = False) -> None:
        self.events.append((self.encode(data), token))

    def encode(self, data: Json) -> bytes:
        body = json.dumps(data, ensure_ascii=False)
        if self.named:
            return f"event: {data['type']}\ndata: {body}\n\n".encode()
        return f"data: {body}\n\n".encode()

    def broken(self, error: Json) -> list[tuple[bytes, bool]]:
        """The events a stream that fails half-way sends: the opening, half of the rest (at
        least up to the first token), then ``error``."""
        tokens = [i for i, (_, token) in enumerate(self.events) if token]
        middle = tokens[len(tokens) // 2] if tokens else self.opening
        cut = max(self.opening, middle)
        return [*self.events[:cut], (self.encode(error), False)]


def pieces(text: str) -> list[str]:
    """``text`` as deltas of one token each (whitespace kept); joined, they are ``text``."""
    found = _PIECE.findall(text)
    if not found:
        return [text] if text else []
    found[-1] += text[sum(map(len, found)) :]
    return found


def anthropic_stream(message: Json, headers: dict[str, str]) -> EventStream:
    """The events of Anthropic's stream for the finished ``message``."""
    stream = EventStream(headers=headers)
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    start.pop("stop_details", None)
    stream.add({"type": "message_start", "message": start})
    blocks: list[Json] = message["content"]
    if not blocks:
        stream.add({"type": "ping"})
    for index, block in enumerate(blocks):
        if block["type"] == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opened = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        stream.add({"type": "content_block_start", "index": index, "content_block": opened})
        if index == 0:
            stream.add({"type": "ping"})
        for delta in deltas:
            stream.add({"type": "content_block_delta", "index": index, "delta": delta}, token=True)
        stream.add({"type": "content_block_stop", "index": index})
    stop: Json = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    if "stop_details" in message:
        stop["stop_details"] = message["stop_details"]
    usage_delta = {"output_tokens": usage["output_tokens"]}
    stream.add({"type": "message_delta", "delta": stop, "usage": usage_delta})
    stream.add({"type": "message_stop"})
    return stream


def openai_stream(completion: Json, headers: dict[str, str], *, usage: bool) -> EventStream:
    """The chunks of OpenAI's stream for the finished chat ``completion`` (one choice);
    ``usage``: the request asked ``stream_options.include_usage``."""
    stream = EventStream(headers=headers, named=False)
    base = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    extra: Json = {"usage": None} if usage else {}
    choice = completion["choices"][0]
    message = choice["message"]
    refused = message["content"] is None and message["refusal"] is not None
    key = "refusal" if refused else "content"
    opened: Json = {"role": "assistant", "content": None if refused else "", "refusal": None}
    opened[key] = ""

    def chunk(delta: Json, finish: str | None = None) -> Json:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return {**base, "choices": choices, **extra}

    stream.add(chunk(opened))
    for piece in pieces(message[key] or ""):
        stream.add(chunk({key: piece}), token=True)
    stream.add(chunk({}, choice["finish_reason"]))
    if usage:
        stream.add({**base, "choices": [], "usage": completion["usage"]})
    stream.events.append((b"data: [DONE]\n\n", False))
    return stream
