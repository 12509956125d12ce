"""The control socket server, in the worker: aiohttp on a unix socket only its owner can use.

Security (DESIGN.md): the socket is 0600 in a 0700 directory that is ours (``statedir.prepare``:
a foreign, shared or symlinked-away directory is refused), bound under a private temporary name
and renamed into place (no window where it exists with looser modes); a socket file left by a
crash (nothing answers on it) is replaced; a live one means another instance owns the state dir,
and we refuse. Every request's peer credentials are checked: only our own uid is served.

The server knows nothing of breakers or limiters: it calls a :class:`ControlTarget` (the worker)
with arguments already checked (:mod:`.inputs`: JSON depth, finite numbers, every duration above
zero and at most ``MAX_DURATION``, Unicode text, no unknown field). Malformed requests get a 4xx
JSON error naming the field and change nothing; a client that vanishes mid-stream costs the worker
nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from khronos_cli import statedir
from khronos_cli.control import inputs
from khronos_cli.control.jsonapi import Handler, dumps, error, json_errors, read_object
from khronos_cli.control.peer import peer_uid
from khronos_cli.control.protocol import (
    DEPENDENCIES,
    MAX_BODY,
    MAX_DURATION,
    OUTAGE_MODES,
    encode_line,
)
from khronos_cli.control.repeats import Repeats
from khronos_cli.errors import AlreadyRunningError, ControlError

__all__ = ["ControlServer", "ControlTarget", "bind_unix_socket"]

logger = logging.getLogger("khronos.control")

MAX_REASON = 200
MAX_PATH = 4096  # PATH_MAX


class ControlTarget(Protocol):
    """What the worker offers the control socket. Errors: KeyError (unknown name -> 404),
    ValueError (bad argument -> 400), KhronosError (refused -> 409)."""

    def status(self) -> dict[str, Any]: ...
    def breakers(self) -> dict[str, Any]: ...
    def limiters(self) -> dict[str, Any]: ...
    def outages(self) -> list[dict[str, Any]]: ...
    async def replica_list(self) -> list[dict[str, Any]]: ...
    async def backup_list(self) -> dict[str, Any]: ...
    async def backup(self, path: str | None) -> dict[str, Any]: ...
    async def force_breaker(
        self, name: str, state: str | None, *, reason: str, duration: float | None
    ) -> dict[str, Any]: ...
    def start_outage(self, spec: dict[str, Any]) -> dict[str, Any]: ...
    def stop_outages(self, name: str | None) -> list[dict[str, Any]]: ...
    def event_stream(self) -> AsyncIterator[dict[str, Any]]: ...
    async def test_alert(self) -> dict[str, Any]: ...
    def stop_stream(
        self, *, force: bool, deadline: float | None
    ) -> AsyncIterator[dict[str, Any]]: ...


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening unix socket at ``path``: mode 0600, directory 0700, bound atomically.

    Raises AlreadyRunningError when a live server answers there; a stale file is replaced;
    StateDirError when the directory is not ours (or the path too long for a socket).
    """
    statedir.prepare(path.parent)
    if path.exists() or path.is_symlink():
        if _answers(path):
            raise AlreadyRunningError(str(path))
        logger.info("replacing a stale control socket at %s", path)
        path.unlink()
    temporary = statedir.socket_temporary(path)
    temporary.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(os.fspath(temporary))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
        sock.listen(128)
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    finally:
        os.umask(previous)
    sock.setblocking(False)
    return sock


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return False
        raise ControlError(f"cannot probe the control socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    return True


@web.middleware
async def _owner_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    uid = None if sock is None else peer_uid(sock)
    if uid is not None and uid != os.getuid():
        logger.warning("refused a control request from uid %s", uid)
        return error(403, "only the user that runs khronos may use its control socket")
    return await handler(request)


class ControlServer:
    """Serves a :class:`ControlTarget` on ``path`` until :meth:`aclose`."""

    def __init__(self, path: Path, target: ControlTarget) -> None:
        self.path = path
        self.target = target
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None
        self.repeats = Repeats(logger)

    async def startup(self) -> None:
        sock = bind_unix_socket(self.path)
        self._inode = os.stat(self.path).st_ino
        try:
            app = web.Application(
                middlewares=[_owner_only, json_errors(self.repeats)], client_max_size=MAX_BODY
            )
            app.add_routes(self._routes())
            self._runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=1.0
            )
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            sock.close()
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop serving and remove the socket file (only if it is still ours)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.repeats.flush()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    def _routes(self) -> list[web.RouteDef]:
        t = self.target

        def read(fn: Callable[[web.Request], Any]) -> Handler:
            async def handler(request: web.Request) -> web.StreamResponse:
                return web.json_response(fn(request), dumps=dumps)

            return handler

        return [
            web.get("/status", read(lambda r: t.status())),
            web.get("/breakers", read(lambda r: t.breakers())),
            web.get("/limiters", read(lambda r: t.limiters())),
            web.get("/outages", read(lambda r: t.outages())),
            web.get("/replicas", self._replicas),
            web.get("/backups", self._backups),
            web.post("/backup", self._backup),
            web.post("/breakers/{name}/{action}", self._force),
            web.post("/outages", self._start_outage),
            web.delete("/outages", read(lambda r: t.stop_outages(None))),
            web.delete("/outages/{name}", read(lambda r: t.stop_outages(r.match_info["name"]))),
            web.get("/events", self._events),
            web.post("/alerts/test", self._test_alert),
            web.post("/stop", self._stop),
        ]

    async def _force(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        states = {"open": "open", "close": "closed", "reset": None}
        if action not in states:
            raise web.HTTPNotFound(
                reason=f"unknown breaker action {action!r}: open, close or reset"
            )
        body = await read_object(request)
        inputs.only(body, ("for", "reason"))
        reason = inputs.text(body, "reason", most=MAX_REASON, required=False, default="operator")
        duration = inputs.seconds(body, "for")
        assert reason is not None
        name = request.match_info["name"]
        result = await self.target.force_breaker(
            name, states[action], reason=reason, duration=duration
        )
        return web.json_response(result, dumps=dumps)

    async def _start_outage(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        inputs.only(body, ("name", "mode", "for", "probability", "status", "latency"))
        checked = {
            "name": inputs.choice(body, "name", DEPENDENCIES, default=""),
            "mode": inputs.choice(body, "mode", OUTAGE_MODES, default="down"),
            "for": inputs.seconds(body, "for"),
            "probability": inputs.number(body, "probability", lo=0.0, hi=1.0),
            "status": inputs.integer(body, "status", lo=429, hi=599, required=False),
            "latency": inputs.number(body, "latency", lo=0.0, hi=MAX_DURATION),
        }
        spec = {key: value for key, value in checked.items() if value is not None}
        return web.json_response(self.target.start_outage(spec), dumps=dumps)

    async def _test_alert(self, request: web.Request) -> web.Response:
        inputs.only(await read_object(request), ())
        return web.json_response(await self.target.test_alert(), dumps=dumps)

    async def _backups(self, request: web.Request) -> web.Response:
        return web.json_response(await self.target.backup_list(), dumps=dumps)

    async def _backup(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        inputs.only(body, ("path",))
        path = inputs.text(body, "path", most=MAX_PATH, required=False)
        if path is not None and (not os.path.isabs(path) or "\0" in path):
            raise inputs.FieldError("path", "'path' must be an absolute path without NUL bytes")
        return web.json_response(await self.target.backup(path), dumps=dumps)

    async def _replicas(self, request: web.Request) -> web.Response:
        return web.json_response(await self.target.replica_list(), dumps=dumps)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, self.target.event_stream())

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        inputs.only(body, ("force", "deadline"))
        force = inputs.boolean(body, "force", default=False)
        deadline = inputs.seconds(body, "deadline")
        return await self._stream(request, self.target.stop_stream(force=force, deadline=deadline))

    async def _stream(
        self, request: web.Request, events: AsyncIterator[dict[str, Any]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            async for event in events:
                await response.write(encode_line(event))
        except (ConnectionResetError, ConnectionError):
            logger.debug("a control client left a stream early")
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        return response
