"""The loopback HTTP server under every sandbox stand-in.

Each stand-in is an ``aiohttp.web`` application bound to 127.0.0.1 (port 0: a free port) and run
with ``AppRunner``/``TCPSite`` inside the caller's event loop, so tests and ``khronos run
--sandbox`` drive it with plain ``await``: ``start()`` returns the base URL, ``aclose()`` stops it,
``async with`` does both.

Handlers that wait without end on purpose (a ``hang`` fault, a long poll) wait through
:meth:`LoopbackServer._pause`, which ends early when the server closes, so ``aclose()`` returns at
once instead of sitting out aiohttp's shutdown timeout. Handlers are cancelled when their client
disconnects (``handler_cancellation``), so a client that gives up on a hung request leaves nothing
behind. :meth:`LoopbackServer._drop_connection` is how a stand-in plays "down": the connection is
closed without an answer, which a client sees as a transport error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from types import TracebackType
from typing import Self

from aiohttp import web

from khronos_cli.errors import SandboxError

__all__ = ["LoopbackServer", "SandboxError"]

LOOPBACK = "127.0.0.1"
_SHUTDOWN_TIMEOUT = 1.0
_MAX_BODY = 26 * 1024 * 1024  # OpenAI's transcription upload limit is 25 MB


class LoopbackServer:
    """An aiohttp application on a loopback port; subclasses add routes in :meth:`_routes`."""

    name = "sandbox"
    # How long aclose() lets a handler that ignores closing run before aiohttp cancels it.
    # Every wait of ours ends on closing, so this is a backstop; tests raise it to prove that.
    shutdown_timeout = _SHUTDOWN_TIMEOUT

    def __init__(self, *, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`aclose`."""
        return self._runner is not None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, once started."""
        if self._runner is None:
            raise SandboxError(f"the {self.name} stand-in is not started; await start() first")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Bind and serve; returns the base URL. Starting a started server changes nothing."""
        if self._runner is not None:
            return self.base_url
        app = web.Application(client_max_size=_MAX_BODY)
        self._routes(app)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise SandboxError(
                f"the {self.name} stand-in cannot listen on {self.host}:{self.port} ({reason}); "
                "pass port=0 for a free port"
            ) from exc
        self._closing = asyncio.Event()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        await self._on_start()
        return self.base_url

    async def aclose(self) -> None:
        """Stop serving: release waiting handlers, run the subclass hook, close the sockets."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        try:
            await self._on_close()
        finally:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- for subclasses -------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        """Add the stand-in's routes to ``app``."""
        raise NotImplementedError

    async def _on_start(self) -> None:
        """Called once the port is bound."""

    async def _on_close(self) -> None:
        """Called when closing, after waiting handlers were released, before the sockets close."""

    @property
    def closing(self) -> bool:
        """True once :meth:`aclose` began."""
        return self._closing.is_set()

    async def _pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (``None``: until closed); True when cut short by closing."""
        if seconds is not None and seconds <= 0:
            return self._closing.is_set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        return self._closing.is_set()

    @staticmethod
    def _drop_connection(request: web.Request) -> web.Response:
        """Close the client's connection without an answer (the client sees a transport error)."""
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=503)
