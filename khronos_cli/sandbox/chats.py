"""The sandbox Telegram's world: chats, their messages, and what users do in them.

:class:`Chats` holds every message (the users' and the bot's) by chat, the files users sent
(:mod:`.files`), who blocked the bot and which groups became supergroups. Its ``push_*`` methods
are the users' side: each builds the update Telegram would send, queues it (:mod:`.updates`) and
records a :class:`~khronos_cli.sandbox.records.UserMessage` saying whether it deserves an answer
(:func:`~khronos_cli.sandbox.ledger.deserves_answer`). Its ``check_send`` / ``replied_message`` /
``add_bot_message`` are the Bot API's side of ``sendMessage``.

Chat ids follow the Bot API: a private chat's id is the user's id; a basic group's is negative
above -10**12; a supergroup's (and a channel's) is -100… (at most -10**12). :meth:`Chats.migrate`
upgrades a basic group as Telegram does: a ``migrate_to_chat_id`` service message in the old group,
a ``migrate_from_chat_id`` one in the new supergroup, the old id dead from then on (``400`` with
``parameters.migrate_to_chat_id``), and users' later messages land in the new chat.

A blocked bot (:meth:`Chats.block`) gets ``403 "Forbidden: bot was blocked by the user"`` for
anything it sends to that user's private chat, and a ``my_chat_member`` update (status
``kicked``) as the real one does. Message texts carry their entities (:mod:`.entities`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from khronos_cli.sandbox import service
from khronos_cli.sandbox._botapi import BotAPIError
from khronos_cli.sandbox.entities import command_target, text_fields
from khronos_cli.sandbox.files import FileStore
from khronos_cli.sandbox.ledger import deserves_answer
from khronos_cli.sandbox.records import MessageKind, UserMessage
from khronos_cli.sandbox.updates import UpdateQueue

__all__ = ["BOT_USERNAME", "SUPERGROUP_BASE", "Chats"]

BOT_USERNAME = "khronos_sandbox_bot"  # what getMe says; groups address the bot by it
BOT_NAME = "khronos sandbox"
SUPERGROUP_BASE = -1_000_000_000_000  # supergroup and channel ids are -100… (at most this)
GROUP_OWNER = 1000  # who upgrades a group when no user is named
Json = dict[str, Any]


class Chats:
    """Messages by chat, blocks and migrations, and the pushes that create updates."""

    def __init__(
        self, updates: UpdateQueue, *, bot_id: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.updates = updates
        self.clock = clock
        self.bot: Json = {
            "id": bot_id,
            "is_bot": True,
            "first_name": BOT_NAME,
            "username": BOT_USERNAME,
        }
        self.files = FileStore()
        self.pushed: list[UserMessage] = []
        self.migrations: dict[int, int] = {}  # old group id -> supergroup id
        self.blocks: dict[int, list[tuple[float, float | None]]] = {}  # user id -> periods
        self._messages: dict[tuple[int, int], Json] = {}
        self._titles: dict[int, str] = {}
        self._channels: set[int] = set()
        self._last_bot_message: dict[int, int] = {}
        self._next_message_id = 1
        self._next_query_id = 1

    # -- identities -------------------------------------------------------------------------------

    @staticmethod
    def user(user_id: int) -> Json:
        """A simulated user's ``User`` object."""
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": f"User {user_id}",
            "username": f"sandbox_user_{user_id}",
            "language_code": "pt-br",
        }

    def chat(self, chat_id: int, user_id: int | None = None) -> Json:
        """The ``Chat`` object of ``chat_id``."""
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {user_id or chat_id}"}
        if chat_id in self._channels:
            kind = "channel"
        else:
            kind = "supergroup" if chat_id <= SUPERGROUP_BASE else "group"
        title = self._titles.get(chat_id, f"Sandbox {kind} {chat_id}")
        return {"id": chat_id, "type": kind, "title": title}

    def current_id(self, chat_id: int) -> int:
        """Where messages to ``chat_id`` go now (a migrated group's supergroup)."""
        return self.migrations.get(chat_id, chat_id)

    def message(self, chat_id: int, message_id: int) -> Json | None:
        """A message of ``chat_id`` (a user's or the bot's), as Telegram sent it."""
        return self._messages.get((chat_id, message_id))

    def last_bot_message(self, chat_id: int) -> int | None:
        """The id of the last message the bot sent in ``chat_id``, if any."""
        return self._last_bot_message.get(chat_id)

    def blocked(self, user_id: int) -> bool:
        """True while ``user_id`` blocks the bot."""
        periods = self.blocks.get(user_id) or [(0.0, 0.0)]
        return periods[-1][1] is None

    # -- users' messages ---------------------------------------------------------------------------

    def push_text(
        self, chat_id: int, user_id: int, text: str, *, reply_to: int | None = None
    ) -> int:
        """``user_id`` writes ``text`` (maybe replying to message ``reply_to``); the message id."""
        content = text_fields(text)
        kind: MessageKind = (
            "command" if command_target(text, content.get("entities", [])) else "text"
        )
        return self._push_user_message(chat_id, user_id, content, kind, text, reply_to)

    def push_voice(
        self,
        chat_id: int,
        user_id: int,
        transcript: str,
        *,
        file_size: int | None = None,
        caption: str | None = None,
        reply_to: int | None = None,
    ) -> int:
        """A voice note transcribing to ``transcript``; ``file_size`` over 20 MB declares one too
        big to download (:mod:`.files`). Returns the message id."""
        content: Json = {"voice": self.files.add_voice(transcript, file_size=file_size)}
        if caption:
            content.update(text_fields(caption, caption=True))
        return self._push_user_message(chat_id, user_id, content, "voice", transcript, reply_to)

    def push_sticker(
        self, chat_id: int, user_id: int, emoji: str = "🙂", *, reply_to: int | None = None
    ) -> int:
        """A sticker (a message with no text); returns the message id."""
        content = {"sticker": service.sticker(self._next_message_id, emoji)}
        return self._push_user_message(chat_id, user_id, content, "sticker", emoji, reply_to)

    def push_channel_post(self, chat_id: int, text: str) -> int:
        """A post in channel ``chat_id`` (-100…) where the bot is a member; the message id."""
        if chat_id > SUPERGROUP_BASE:
            raise ValueError(f"a channel id is -100… (at most {SUPERGROUP_BASE}), got {chat_id}")
        self._channels.add(chat_id)
        chat = self.chat(chat_id)
        message: Json = {
            "message_id": self._new_message_id(),
            "sender_chat": chat,
            "chat": chat,
            "date": int(time.time()),
            **text_fields(text),
        }
        self._messages[(chat_id, message["message_id"])] = message
        update_id = self.updates.push({"channel_post": message})
        self._record(update_id, message["message_id"], chat_id, 0, text, "channel_post", False)
        return int(message["message_id"])

    # -- service messages --------------------------------------------------------------------------

    def push_service(
        self,
        chat_id: int,
        user_id: int,
        kind: str,
        *,
        users: list[int] | None = None,
        title: str | None = None,
        message_id: int | None = None,
    ) -> int:
        """A service message in group ``chat_id`` done by ``user_id``; the message id.

        ``kind``: ``new_chat_members`` (``users`` joined; default: ``user_id``; the bot's id adds
        the bot), ``left_chat_member`` (``users[0]`` or ``user_id`` left), ``pinned_message``
        (``message_id`` pinned), ``new_chat_title`` (``title``), ``group_chat_created``. The
        ``migrate_*`` ones come only from :meth:`migrate`."""
        chat_id = self.current_id(chat_id)
        if chat_id > 0:
            raise ValueError(f"service messages are pushed into groups, got chat {chat_id}")
        people = [self._member(u) for u in (users or [user_id])]
        if kind == "new_chat_members":
            content = service.new_chat_members(people)
        elif kind == "left_chat_member":
            content = service.left_chat_member(people[0])
        elif kind == "pinned_message":
            pinned = self.message(chat_id, message_id) if message_id is not None else None
            if pinned is None:
                raise ValueError(f"no message {message_id} in chat {chat_id} to pin")
            content = service.pinned_message(pinned)
        elif kind == "new_chat_title":
            if not title:
                raise ValueError("new_chat_title needs a title")
            self._titles[chat_id] = title
            content = service.new_chat_title(title)
        elif kind == "group_chat_created":
            content = service.group_chat_created()
        else:
            kinds = ", ".join(service.SERVICE_KINDS[:5])
            raise ValueError(f"unknown service message {kind!r}: expected one of {kinds}")
        return self._push_service(chat_id, user_id, content, kind)

    def add_bot(self, chat_id: int, user_id: int) -> int:
        """``user_id`` adds the bot to group ``chat_id``: a ``my_chat_member`` update (left ->
        member) and the ``new_chat_members`` service message naming the bot; the message id."""
        chat_id = self.current_id(chat_id)
        self.push_my_chat_member(chat_id, user_id, "left", "member")
        return self.push_service(chat_id, user_id, "new_chat_members", users=[self.bot["id"]])

    def migrate(self, chat_id: int, *, user_id: int = GROUP_OWNER) -> int:
        """Upgrade basic group ``chat_id`` to a supergroup; returns the supergroup's id."""
        if not SUPERGROUP_BASE < chat_id < 0:
            raise ValueError(f"only a basic group (-10**12 < id < 0) is upgraded, got {chat_id}")
        if chat_id in self.migrations:
            raise ValueError(f"group {chat_id} was already upgraded to {self.migrations[chat_id]}")
        new_id = SUPERGROUP_BASE + chat_id
        if chat_id in self._titles:
            self._titles[new_id] = self._titles[chat_id]
        self._push_service(chat_id, user_id, service.migrate_to(new_id), "migrate_to_chat_id")
        self.migrations[chat_id] = new_id
        self._push_service(new_id, user_id, service.migrate_from(chat_id), "migrate_from_chat_id")
        return new_id

    # -- edits and other updates -------------------------------------------------------------------

    def push_edit(self, chat_id: int, message_id: int, text: str) -> int:
        """The author of message ``message_id`` edits it to ``text``; returns the update id."""
        original = self.message(chat_id, message_id)
        if original is None or "text" not in original:
            raise ValueError(f"no text message {message_id} in chat {chat_id} to edit")
        edited: Json = {k: v for k, v in original.items() if k != "entities"}
        edited.update(edit_date=int(time.time()), **text_fields(text))
        self._messages[(chat_id, message_id)] = edited
        update_id = self.updates.push({"edited_message": edited})
        user_id = int(edited.get("from", {}).get("id", 0))
        self._record(update_id, message_id, chat_id, user_id, text, "edit", False)
        return update_id

    def push_callback_query(
        self, chat_id: int, user_id: int, message_id: int, data: str = "sandbox"
    ) -> int:
        """``user_id`` presses a button with ``data`` under message ``message_id``; update id."""
        message = self.message(chat_id, message_id)
        if message is None:
            raise ValueError(f"no message {message_id} in chat {chat_id} to press a button under")
        query_id, self._next_query_id = self._next_query_id, self._next_query_id + 1
        body = service.callback_query(query_id, self.user(user_id), message, data)
        update_id = self.updates.push({"callback_query": body})
        self._record(update_id, message_id, chat_id, user_id, data, "callback_query", False)
        return update_id

    def push_reaction(self, chat_id: int, user_id: int, message_id: int, emoji: str = "👍") -> int:
        """``user_id`` reacts to message ``message_id``; returns the update id."""
        chat = self.chat(chat_id, user_id)
        body = service.reaction(chat, message_id, self.user(user_id), emoji, int(time.time()))
        update_id = self.updates.push({"message_reaction": body})
        self._record(update_id, message_id, chat_id, user_id, emoji, "message_reaction", False)
        return update_id

    def push_my_chat_member(self, chat_id: int, user_id: int, old: str, new: str) -> int:
        """The bot's status in ``chat_id`` changed from ``old`` to ``new`` (``left``,
        ``member``, ``administrator``, ``kicked``) by ``user_id``; returns the update id."""
        chat = self.chat(chat_id, user_id)
        body = service.my_chat_member(
            chat, self.user(user_id), self.bot, old, new, int(time.time())
        )
        update_id = self.updates.push({"my_chat_member": body})
        self._record(update_id, 0, chat_id, user_id, f"{old} -> {new}", "my_chat_member", False)
        return update_id

    def block(self, user_id: int) -> int:
        """``user_id`` blocks the bot (``my_chat_member``: member -> kicked); the update id."""
        if self.blocked(user_id):
            raise ValueError(f"user {user_id} already blocks the bot")
        self.blocks.setdefault(user_id, []).append((self.clock(), None))
        return self.push_my_chat_member(user_id, user_id, "member", "kicked")

    def unblock(self, user_id: int) -> int:
        """``user_id`` unblocks the bot (``my_chat_member``: kicked -> member); the update id."""
        if not self.blocked(user_id):
            raise ValueError(f"user {user_id} does not block the bot")
        periods = self.blocks[user_id]
        periods[-1] = (periods[-1][0], self.clock())
        return self.push_my_chat_member(user_id, user_id, "kicked", "member")

    # -- the bot's side ----------------------------------------------------------------------------

    def check_send(self, chat_id: int) -> None:
        """Raise the Bot API's error when the bot can no longer write in ``chat_id``."""
        if chat_id in self.migrations:
            raise BotAPIError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrations[chat_id],
            )
        if chat_id > 0 and self.blocked(chat_id):
            raise BotAPIError(403, "Forbidden: bot was blocked by the user")

    def replied_message(
        self, chat_id: int, message_id: int | None, allow_missing: bool
    ) -> Json | None:
        """The message a send replies to; a missing one is no reply with ``allow_missing``
        (``allow_sending_without_reply``), else ``400 "message to be replied not found"``."""
        if message_id is None or message_id <= 0:
            return None
        replied = self.message(chat_id, message_id)
        if replied is None and not allow_missing:
            raise BotAPIError(400, "Bad Request: message to be replied not found")
        return replied

    def add_bot_message(self, chat_id: int, text: str, replied: Json | None) -> Json:
        """Store a message the bot sent and return it as ``sendMessage`` answers it."""
        message: Json = {
            "message_id": self._new_message_id(),
            "from": self.bot,
            "chat": self.chat(chat_id),
            "date": int(time.time()),
        }
        if replied is not None:
            message["reply_to_message"] = _without_reply(replied)
        message.update(text_fields(text))
        self._messages[(chat_id, message["message_id"])] = message
        self._last_bot_message[chat_id] = message["message_id"]
        return message

    # -- internals ---------------------------------------------------------------------------------

    def _new_message_id(self) -> int:
        message_id, self._next_message_id = self._next_message_id, self._next_message_id + 1
        return message_id

    def _member(self, user_id: int) -> Json:
        return self.bot if user_id == self.bot["id"] else self.user(user_id)

    def _push_user_message(
        self,
        chat_id: int,
        user_id: int,
        content: Json,
        kind: MessageKind,
        text: str,
        reply_to: int | None,
    ) -> int:
        chat_id = self.current_id(chat_id)
        message = self._new_message(chat_id, user_id)
        if reply_to is not None:
            replied = self.message(chat_id, reply_to)
            if replied is None:
                raise ValueError(f"no message {reply_to} in chat {chat_id} to reply to")
            message["reply_to_message"] = _without_reply(replied)
        message.update(content)
        expects = deserves_answer(message, self.bot)
        return self._queue(message, user_id, text, kind, expects)

    def _push_service(self, chat_id: int, user_id: int, content: Json, text: str) -> int:
        message = self._new_message(chat_id, user_id)
        message.update(content)
        return self._queue(message, user_id, text, "service", False)

    def _new_message(self, chat_id: int, user_id: int) -> Json:
        return {
            "message_id": self._new_message_id(),
            "from": self.user(user_id),
            "chat": self.chat(chat_id, user_id),
            "date": int(time.time()),
        }

    def _queue(
        self, message: Json, user_id: int, text: str, kind: MessageKind, expects: bool
    ) -> int:
        chat_id, message_id = int(message["chat"]["id"]), int(message["message_id"])
        self._messages[(chat_id, message_id)] = message
        update_id = self.updates.push({"message": message})
        self._record(update_id, message_id, chat_id, user_id, text, kind, expects)
        return message_id

    def _record(
        self,
        update_id: int,
        message_id: int,
        chat_id: int,
        user_id: int,
        text: str,
        kind: MessageKind,
        expects: bool,
    ) -> None:
        self.pushed.append(
            UserMessage(update_id, message_id, chat_id, user_id, text, kind, self.clock(), expects)
        )


def _without_reply(message: Json) -> Json:
    """A replied-to message as Telegram nests it: without its own ``reply_to_message``."""
    return {key: value for key, value in message.items() if key != "reply_to_message"}
