"""The CLI's side of the control socket: HTTP/1.1 + JSON over the unix socket, standard library.

``http.client`` speaks HTTP here (no parser of ours), over a socket we connect ourselves: the
CLI then imports neither httpx nor aiohttp, and a run of ``khronos breakers --json`` costs little
more than starting Python. Nothing listening there (no file, or a refused connect: a stale socket)
is :class:`NotRunningError` (exit 3); an error answer is :class:`ControlError` with its message.

Before a byte is sent, the server's peer credentials are read: a socket served by another uid
(one swapped in by another user of the machine) is refused with :class:`ControlError` (exit 1),
so nothing it says is believed and nothing we send reaches it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from khronos_cli.control.peer import peer_uid
from khronos_cli.control.protocol import decode_line, socket_path
from khronos_cli.errors import ControlError, NotRunningError

TYPE_CHECKING = False  # the CLI's fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ControlClient"]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("khronos", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
            owner = peer_uid(sock)
        except BaseException:
            sock.close()
            raise
        me = os.geteuid()
        if owner is not None and owner != me:
            sock.close()
            raise ControlError(
                f"the control socket {self._path} is served by uid {owner}, not by you (uid "
                f"{me}): refusing to trust it; check who owns {self._path.parent}"
            )
        self.sock = sock


class ControlClient:
    """``with ControlClient(state_dir) as client: client.get("/breakers")``."""

    def __init__(self, state_dir: Path, *, timeout: float = 10.0) -> None:
        self.path = socket_path(state_dir)
        self.timeout = timeout
        self._open: list[_UnixConnection] = []

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()

    def get(self, path: str) -> Any:
        return self._json(self._request("GET", path))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._json(self._request("POST", path, body or {}))

    def delete(self, path: str) -> Any:
        return self._json(self._request("DELETE", path))

    def stream(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """NDJSON events as they arrive (no read timeout), until the server ends the stream."""
        response = self._request(method, path, body)
        if response.status >= 400:
            self._json(response)
        connection = self._open[-1]
        if connection.sock is not None:
            connection.sock.settimeout(None)
        try:
            while line := response.readline():
                if line.strip():
                    yield decode_line(line)
        except (http.client.HTTPException, OSError) as exc:
            raise ControlError("the worker closed the control connection mid-stream") from exc
        finally:
            response.close()

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> http.client.HTTPResponse:
        connection = _UnixConnection(self.path, self.timeout)
        self._open.append(connection)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, path, body=payload, headers=headers)
            return connection.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunningError(str(self.path)) from None
        except TimeoutError:
            raise ControlError(f"the worker did not answer on {self.path} in time") from None
        except PermissionError:
            raise ControlError(f"no permission to use {self.path}: run as its owner") from None
        except (http.client.HTTPException, OSError) as exc:
            raise ControlError(f"the control socket {self.path} failed: {exc}") from None

    def _json(self, response: http.client.HTTPResponse) -> Any:
        try:
            raw = response.read()
        except (http.client.HTTPException, OSError) as exc:
            raise ControlError(f"the worker broke off its answer: {exc}") from None
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if response.status >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise ControlError(str(message or f"HTTP {response.status}"), status=response.status)
        return data
