"""The public port's listening socket: a cap on connections, an answer past it, accept errors
counted.

aiohttp bounds each connection (the request head must arrive within its keep-alive timeout, the
body within ``READ_TIMEOUT``, lines and headers have size limits) but not how many there are, and
each costs a file descriptor and a task: 21,000 slow clients once exhausted the worker's
descriptors, ``/health`` stopped answering and 7,841 ``accept()`` tracebacks rotated the log away.

So the port is an aiohttp site (:class:`CappedSite`) whose protocol factory counts:

- below the cap (:data:`MAX_CONNECTIONS`, or a quarter of ``RLIMIT_NOFILE`` if that is lower) a
  connection goes to the application, as with aiohttp's ``TCPSite``;
- past it, to the **overflow**: a second, tiny aiohttp server with no application behind it. It
  answers ``GET /health`` 200 (liveness probes keep passing while the port is saturated; the
  process *is* alive) and anything else 503 with ``Retry-After: 1`` and ``Connection: close``,
  and gives a connection :data:`OVERFLOW_TIMEOUT` for its request head;
- past :data:`OVERFLOW_CONNECTIONS` more (or a sixteenth of ``RLIMIT_NOFILE``), a new connection
  is closed at once. Both caps together stay well inside the descriptors the process may open.

``socket.accept()`` failures (out of descriptors) are counted by :class:`AcceptErrors`, one log
line for all of them (see ``control.repeats``), instead of asyncio's traceback per accept.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web

from khronos_cli.control.repeats import Repeats

__all__ = [
    "MAX_CONNECTIONS",
    "OVERFLOW_CONNECTIONS",
    "OVERFLOW_TIMEOUT",
    "AcceptErrors",
    "CappedSite",
    "connection_caps",
]

MAX_CONNECTIONS = 2048  # above the 1,000 concurrent /chat calls of the load scenario
OVERFLOW_CONNECTIONS = 256
OVERFLOW_TIMEOUT = 1.0  # seconds for an overflow connection's request head
_ACCEPT_FAILED = "socket.accept() out of system resource"


def connection_caps() -> tuple[int, int]:
    """(application, overflow) caps: the constants, or 1/4 and 1/16 of the soft RLIMIT_NOFILE
    when those are lower."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS, OVERFLOW_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 4)), max(4, min(OVERFLOW_CONNECTIONS, soft // 16))


class _Closed(asyncio.Protocol):
    """Past the overflow too: closed as soon as accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class CappedSite(web.BaseSite):
    """aiohttp's TCP site with caps: past ``limits[0]`` connections go to ``overflow``, past
    ``limits[1]`` more they are closed."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limits: tuple[int, int],
        overflow: web.Server,
        backlog: int,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._overflow = overflow

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        app = self._runner.server
        assert app is not None
        overflow, (limit, spare) = self._overflow, self._limits

        def protocol() -> asyncio.BaseProtocol:
            if len(app.connections) < limit:
                return app()
            if len(overflow.connections) < spare:
                return overflow()
            return _Closed()

        self._server = await asyncio.get_running_loop().create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class AcceptErrors:
    """While installed, the loop's ``accept()`` failures are counted in ``repeats``; every other
    exception context goes to the handler that was there before."""

    def __init__(self, repeats: Repeats) -> None:
        self.repeats = repeats
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._previous = loop, loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def uninstall(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.get_exception_handler() == self._handle:
            loop.set_exception_handler(self._previous)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(_ACCEPT_FAILED):
            reason = context.get("exception")
            self.repeats.note("accept", f"the public port could not accept a connection: {reason}")
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
