"""The admin API's users: what a test in another process makes users do in the sandbox Telegram.

Each endpoint calls the matching :class:`~khronos_cli.sandbox.chats.Chats` method and answers
``{"message_id"?, "update_id"}`` (``user_id`` defaults to ``chat_id``; in a group, give it):

``POST /_sandbox/messages`` — a user's message: ``{"chat_id", "user_id"?, "reply_to"?}`` plus one of
  ``"text": "..."``, ``"voice": "<transcript>"`` (``""`` transcribes to nothing; ``"file_size"``
  over 20 MB declares one too big to download; ``"caption"``), ``"sticker": "<emoji>"``.

``POST /_sandbox/service`` — a service message in a group: ``{"chat_id", "user_id", "kind"}`` with
  ``kind`` one of ``new_chat_members`` (``"users": [ids]``, or ``"bot": true`` for the bot being
  added, which also sends ``my_chat_member``), ``left_chat_member`` (``"users": [id]``),
  ``pinned_message`` (``"message_id"``), ``new_chat_title`` (``"title"``), ``group_chat_created``.

``POST /_sandbox/updates`` — anything else, by ``"kind"``: ``edited_message`` (``chat_id``,
  ``message_id``, ``text``), ``callback_query`` (``chat_id``, ``user_id``, ``message_id``,
  ``data``?), ``message_reaction`` (``chat_id``, ``user_id``, ``message_id``, ``emoji``?),
  ``channel_post`` (``chat_id``, ``text``), ``my_chat_member`` (``chat_id``, ``user_id``,
  ``old``, ``new``). Kinds the bot did not ask for in ``allowed_updates`` are not created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from khronos_cli.sandbox.chats import Chats

__all__ = ["BadRequest", "Pushes", "body_of", "integer"]


class BadRequest(Exception):
    """A malformed admin request (answered 400)."""


class Pushes:
    """The handlers of ``/_sandbox/messages``, ``/service`` and ``/updates`` (POST)."""

    def __init__(self, chats: Chats) -> None:
        self.chats = chats

    async def message(self, request: web.Request) -> object:
        body = await body_of(request)
        chat_id = integer(body, "chat_id")
        user_id = integer(body, "user_id") if "user_id" in body else chat_id
        reply_to = integer(body, "reply_to") if body.get("reply_to") is not None else None
        chats = self.chats
        if isinstance(body.get("voice"), str):
            size = integer(body, "file_size") if body.get("file_size") is not None else None
            caption = _text(body, "caption") if body.get("caption") is not None else None
            message_id = chats.push_voice(
                chat_id, user_id, body["voice"], file_size=size, caption=caption, reply_to=reply_to
            )
        elif isinstance(body.get("sticker"), str) and body["sticker"]:
            message_id = chats.push_sticker(chat_id, user_id, body["sticker"], reply_to=reply_to)
        elif isinstance(body.get("text"), str) and body["text"]:
            message_id = chats.push_text(chat_id, user_id, body["text"], reply_to=reply_to)
        else:
            raise BadRequest(
                'expected "text" (a non-empty string), "voice" (a transcript) or "sticker"'
            )
        return {"message_id": message_id, "update_id": chats.pushed[-1].update_id}

    async def service(self, request: web.Request) -> object:
        body = await body_of(request)
        chat_id = integer(body, "chat_id")
        user_id = integer(body, "user_id")
        kind = _text(body, "kind")
        if kind == "new_chat_members" and body.get("bot") is True:
            message_id = self.chats.add_bot(chat_id, user_id)
        else:
            users = body.get("users")
            if users is not None and not (
                isinstance(users, list) and all(isinstance(u, int) for u in users) and users
            ):
                raise BadRequest(f'"users" must be a non-empty list of user ids, got {users!r}')
            message_id = self.chats.push_service(
                chat_id,
                user_id,
                kind,
                users=users,
                title=_text(body, "title") if "title" in body else None,
                message_id=integer(body, "message_id") if "message_id" in body else None,
            )
        return {"message_id": message_id, "update_id": self.chats.pushed[-1].update_id}

    async def update(self, request: web.Request) -> object:
        body = await body_of(request)
        kind = _text(body, "kind")
        chats = self.chats
        chat_id = integer(body, "chat_id")
        if kind == "edited_message":
            update_id = chats.push_edit(chat_id, integer(body, "message_id"), _text(body, "text"))
        elif kind == "callback_query":
            data = _text(body, "data") if "data" in body else "sandbox"
            user_id, message_id = integer(body, "user_id"), integer(body, "message_id")
            update_id = chats.push_callback_query(chat_id, user_id, message_id, data)
        elif kind == "message_reaction":
            emoji = _text(body, "emoji") if "emoji" in body else "👍"
            user_id, message_id = integer(body, "user_id"), integer(body, "message_id")
            update_id = chats.push_reaction(chat_id, user_id, message_id, emoji)
        elif kind == "channel_post":
            message_id = chats.push_channel_post(chat_id, _text(body, "text"))
            return {"message_id": message_id, "update_id": chats.pushed[-1].update_id}
        elif kind == "my_chat_member":
            old, new = _text(body, "old"), _text(body, "new")
            update_id = chats.push_my_chat_member(chat_id, integer(body, "user_id"), old, new)
        else:
            raise BadRequest(
                f"unknown update kind {kind!r}: expected edited_message, callback_query, "
                "message_reaction, channel_post or my_chat_member"
            )
        return {"update_id": update_id}


async def body_of(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body."""
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def integer(body: dict[str, Any], key: str) -> int:
    """``body[key]`` as an int, or :class:`BadRequest` naming the key and the value."""
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f'"{key}" must be an integer, got {value!r}')
    return value


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f'"{key}" must be a non-empty string, got {value!r}')
    return value
