"""Server-Sent Events off the wire: bytes in, ``(event, data)`` pairs out.

The WHATWG event-stream rules the official Anthropic and OpenAI SDKs follow
(``_streaming.SSEDecoder``): lines end in ``\\n``, ``\\r\\n`` or ``\\r``; ``data:`` lines of one
event are joined with ``\\n``; ``event:`` names it; a line starting with ``:`` is a comment; a
blank line dispatches the event (one without data is dropped); an event the stream ends in the
middle of is dropped. Fields are kept as bytes (``orjson.loads`` reads bytes), so a streamed answer
costs a split and a ``json.loads`` per event, no decoder per line.
"""

from __future__ import annotations

__all__ = ["Event", "EventReader"]

Event = tuple[bytes | None, bytes]  # (the event's name, if any; its data)


class EventReader:
    """Feed it the chunks of a response as they come; it returns the events they complete."""

    __slots__ = ("_data", "_event", "_rest")

    def __init__(self) -> None:
        self._rest = b""  # an unfinished line carried to the next chunk
        self._event: bytes | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """The events ``chunk`` completes, in order (maybe none)."""
        buffer = self._rest + chunk if self._rest else chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # maybe the first half of a \r\n: wait for the next chunk
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._rest = lines.pop() + held
        events: list[Event] = []
        for line in lines:
            if not line:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    events.append((self._event, data))
                    self._data = []
                self._event = None
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
            # a comment (empty name), id, retry and unknown fields carry nothing we use
        return events
