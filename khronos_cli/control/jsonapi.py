"""JSON errors for khronos's aiohttp servers (the control socket and the public port).

Whatever goes wrong in a handler, the client gets ``{"error": {"status", "message"}}`` with a 4xx
(or, for our own bugs, a 500 that names no internals) and the server keeps serving:
aiohttp's own HTTP errors (404, 405, 413, bad requests) keep their status; ``KeyError`` is 404,
``ValueError`` 400, any :class:`KhronosError` 409 unless it says otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from khronos_cli.control.protocol import error_body
from khronos_cli.errors import KhronosError

__all__ = ["Handler", "dumps", "error", "json_errors", "read_object"]

logger = logging.getLogger("khronos.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason, headers=_allow(exc))
        raise
    except KeyError as exc:
        return error(404, f"unknown name {exc.args[0]!r}" if exc.args else "not found")
    except ValueError as exc:
        return error(400, str(exc))
    except KhronosError as exc:
        return error(409, str(exc))
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error; see the worker's log")


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


async def read_object(request: web.Request) -> dict[str, Any]:
    """The JSON object in the request body (``{}`` when there is none); ValueError otherwise."""
    if not request.can_read_body:
        return {}
    try:
        data = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object")
    return data
