"""The CLI's side of the control socket: a small synchronous httpx client over the unix socket.

It imports httpx and the protocol module only (never aiohttp or the runtime), and maps "nothing
listens there" to :class:`NotRunningError` (exit 3) and error answers to :class:`ControlError`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from khronos_cli.control.protocol import decode_line, socket_path
from khronos_cli.errors import ControlError, NotRunningError

__all__ = ["ControlClient"]


class ControlClient:
    """``with ControlClient(state_dir) as client: client.get("/breakers")``."""

    def __init__(self, state_dir: Path, *, timeout: float = 10.0) -> None:
        self.path = socket_path(state_dir)
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.path)),
            base_url="http://khronos",
            timeout=timeout,
        )

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body or {})

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def stream(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """NDJSON events as they arrive, until the server ends the stream."""
        self._check_present()
        try:
            with self._http.stream(
                method, path, json=body, timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield decode_line(line)
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise NotRunningError(str(self.path)) from exc
        except httpx.RemoteProtocolError as exc:
            raise ControlError("the worker closed the control connection mid-stream") from exc

    def _check_present(self) -> None:
        # httpcore leaks its socket when a unix connect fails, so "is anyone there" is asked
        # here first, with a socket we close: no file, or a refused connect (a stale socket
        # left by a crash), means not running.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunningError(str(self.path)) from None
        except OSError:
            pass  # let the real request report it
        finally:
            probe.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        self._check_present()
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise NotRunningError(str(self.path)) from exc
        except httpx.TimeoutException as exc:
            raise ControlError(f"the worker did not answer on {self.path} in time") from exc
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    def _raise(self, response: httpx.Response) -> None:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code}"
        raise ControlError(str(message), status=response.status_code)
