"""JSON errors and bounded request bodies for khronos's aiohttp servers (the control socket and
the public port).

Whatever goes wrong in a handler, the client gets ``{"error": {"status", "message"}}`` (plus
``"field"`` when one field is to blame) with a 4xx, or for our own bugs a 500 that names no
internals, and the server keeps serving: aiohttp's own HTTP errors (404, 405, 413, bad requests)
keep their status; :class:`~khronos_cli.control.inputs.FieldError` and ``ValueError`` are 400,
``KeyError`` 404, any :class:`KhronosError` 409 unless it says otherwise. A body must arrive
within :data:`READ_TIMEOUT` (else 408) and pass :mod:`.inputs` (depth, numbers, text).

A client that hangs up before its body arrived is not an error of ours: it is counted (one log
line for all of them, see :mod:`.repeats`) and its connection closed quietly. A bug that repeats
has its first traceback logged, then it is counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from khronos_cli.control.inputs import FieldError, loads
from khronos_cli.control.protocol import error_body
from khronos_cli.control.repeats import Repeats
from khronos_cli.errors import KhronosError

__all__ = [
    "READ_TIMEOUT",
    "Handler",
    "dumps",
    "error",
    "json_errors",
    "read_body",
    "read_object",
]

READ_TIMEOUT = 5.0  # seconds for a request's body to arrive (its head: the servers' keep-alive)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _HungUp(Exception):
    """The client closed its connection before its request body arrived."""


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def error(
    status: int, message: str, *, headers: dict[str, str] | None = None, field: str | None = None
) -> web.Response:
    return web.json_response(error_body(status, message, field), status=status, headers=headers)


def json_errors(repeats: Repeats) -> Middleware:
    """The middleware: exceptions become JSON errors; hang-ups and repeated bugs are counted."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason, headers=_allow(exc))
            raise
        except FieldError as exc:
            return error(400, str(exc), field=exc.field)
        except KeyError as exc:
            return error(404, f"unknown name {exc.args[0]!r}" if exc.args else "not found")
        except ValueError as exc:
            return error(400, str(exc))
        except KhronosError as exc:
            return error(409, str(exc))
        except _HungUp:  # nobody reads this answer: aiohttp drops it and closes quietly
            repeats.note("hang-up", "a client hung up mid-request", level=logging.INFO)
            return error(400, "the request was cut off")
        except Exception as exc:
            repeats.note(
                f"bug {request.method} {request.path} {type(exc).__name__}",
                f"{request.method} {request.path} failed: {type(exc).__name__}",
                level=logging.ERROR,
                exc_info=True,
            )
            return error(500, "internal error; see the worker's log")

    return middleware


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


async def read_body(request: web.Request) -> bytes:
    """The whole body (at most the app's ``client_max_size``: else 413), within READ_TIMEOUT
    (else 408)."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await request.read()
    except ConnectionError:
        raise _HungUp from None
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            reason=f"the request body did not arrive within {READ_TIMEOUT:g}s"
        ) from None


async def read_object(request: web.Request) -> dict[str, Any]:
    """The JSON object in the request body (``{}`` when there is none); FieldError otherwise."""
    raw = await read_body(request)
    if not raw:
        return {}
    data = loads(raw)
    if not isinstance(data, dict):
        raise FieldError(None, "the request body must be a JSON object")
    return data
