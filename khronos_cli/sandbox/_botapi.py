"""The Bot API's wire format, for the sandbox Telegram: parameters in, error answers out.

Parameters arrive in the query string, a JSON body or a form body, and may be mixed; the values of
a query or form are strings, so typed readers (:func:`integer`, :func:`json_value`, :func:`flag`)
accept both forms and answer 400 "Bad Request: ..." like Telegram does. An error is raised as
:class:`BotAPIError` anywhere in a method and rendered once, at the handler, as
``{"ok": false, "error_code", "description"[, "parameters": {...}]}``, where ``parameters`` carries
``retry_after`` (a 429) or ``migrate_to_chat_id`` (a group upgraded to a supergroup), as
Telegram's ``ResponseParameters`` do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "BotAPIError",
    "FailureMode",
    "TelegramFailure",
    "flag",
    "integer",
    "json_value",
    "read_params",
]

Json = dict[str, Any]


class BotAPIError(Exception):
    """An error answer of the Bot API."""

    def __init__(
        self,
        code: int,
        description: str,
        retry_after: int | None = None,
        *,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def response(self) -> web.Response:
        body: Json = {"ok": False, "error_code": self.code, "description": self.description}
        parameters: Json = {}
        if self.migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = self.migrate_to_chat_id
        if self.retry_after is not None:
            parameters["retry_after"] = self.retry_after
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=self.code)


async def read_params(request: web.Request) -> Json:
    """Query string merged with the JSON or form body."""
    params: Json = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as exc:
            raise BotAPIError(400, "Bad Request: can't parse JSON object") from exc
        if not isinstance(body, dict):
            raise BotAPIError(400, "Bad Request: can't parse JSON object")
        params.update(body)
    else:
        form = await request.post()
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    return params


def integer(params: Json, name: str, default: int | None) -> Any:
    """An integer parameter (number or numeric string); ``default`` when absent."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BotAPIError(400, f"Bad Request: wrong parameter {name}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BotAPIError(400, f"Bad Request: wrong parameter {name}") from None


def json_value(params: Json, name: str) -> Any:
    """A parameter that is JSON text when sent in a query or form (``reply_parameters``)."""
    value = params.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise BotAPIError(400, f"Bad Request: can't parse {name} JSON") from None
    return value


def string_list(params: Json, name: str) -> list[str]:
    """A list of strings parameter (``allowed_updates``); empty when given as ``""``."""
    value = [] if params.get(name) == "" else json_value(params, name)
    if not isinstance(value, list):
        raise BotAPIError(400, f"Bad Request: can't parse {name} JSON")
    return [str(item) for item in value]


def flag(params: Json, name: str) -> bool:
    """A boolean parameter (``true`` or ``"true"``)."""
    value = params.get(name)
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


FailureMode = Literal["ok", "errors", "hang", "down"]


@dataclass
class TelegramFailure:
    """An injected fault: ``errors`` answers ``status``, ``hang`` never answers, ``down`` drops
    the connection; limited to ``methods`` (lower-case names) and to ``count`` requests if set."""

    mode: FailureMode = "ok"
    methods: frozenset[str] | None = None
    status: int = 502
    count: int | None = None

    def to_json(self) -> dict[str, Any]:
        methods = None if self.methods is None else sorted(self.methods)
        return {"mode": self.mode, "methods": methods, "status": self.status, "count": self.count}
