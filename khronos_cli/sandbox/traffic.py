"""What simulated users do, message by message: plain traffic, or a mix of what real chats hold.

:class:`Traffic` makes the *i*-th push into the Telegram stand-in's :class:`~.chats.Chats` and
returns one log line for it. Its choices come from one seeded random generator, so a run is
repeatable (what a reply points to depends on what the bot said by then).

**Plain traffic** (``mix=False``): private texts and voice notes (``voice_share``) and, when
``groups`` > 0, a ``group_share`` of texts in supergroups, each mentioning the bot (so each
deserves an answer and the bot of today answers them all).

**The mix** (``mix=True``) adds what a newcomer should see handled:

- private chats: every :data:`SPECIAL_EVERY`-th private push is, in turn, a ~4,090-character
  message, a ``#long``, ``#blocks``, ``#refuse`` or ``#empty`` request (:mod:`.replies`), a
  sticker; and once each: a user who writes and at once blocks the bot, a voice note over 20 MB
  and one with an empty transcript;
- groups: the bot being added, then addressed commands (bare or ``@`` the bot),
  ``/help@OtherBot``, mentions, replies to the bot, unaddressed chatter, service messages (joins,
  leaves, pins, titles), an edit or a callback query now and then; group 0 starts as a basic
  group and is upgraded to a supergroup after :data:`MIGRATE_AFTER` of its pushes.

Any group gets at most :data:`GROUP_RATE` pushes a minute (Telegram's 20 a minute per group, so a
bot that answers everything addressed to it can keep up); past it the push goes to a private
chat instead.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

from khronos_cli.sandbox.chats import BOT_USERNAME
from khronos_cli.sandbox.files import MAX_DOWNLOAD_SIZE

if TYPE_CHECKING:
    from khronos_cli.sandbox.chats import Chats

__all__ = ["FIRST_GROUP_ID", "FIRST_USER_ID", "PHRASES", "Traffic"]

FIRST_USER_ID = 1001
FIRST_GROUP_ID = -1_001_000_000_001  # supergroups: FIRST_GROUP_ID - k
BASIC_GROUP_ID = -4_000_001  # the mix's group 0 starts as a basic group
SPECIAL_EVERY = 7
MIGRATE_AFTER = 6
GROUP_RATE = 20  # pushes per group per minute
LONG_MESSAGE = 4090
PHRASES = (
    "olá, tudo bem?",
    "qual é a capital da Austrália?",
    "me conta uma piada curta",
    "resuma a teoria da relatividade em uma frase",
    "what's the weather like on Mars?",
    "traduza 'bom dia' para o inglês",
    "[bold red]isto não é markup[/bold red]",
    "<b>nem isto</b> & <i>isto</i>",
    "*estrelas* _sublinhado_ `código`",
    "emoji 🚀 e acentuação: ação, coração, pão",
)
_SPECIALS = ("long message", "#long", "#blocks", "#refuse", "#empty", "sticker")
_FIRST_ROUND = (  # the specials, the one-offs among them: a newcomer sees each within minutes
    "long message",
    "#long",
    "blocker",
    "#blocks",
    "#refuse",
    "big voice",
    "#empty",
    "sticker",
    "empty voice",
)
_GROUP_ACTIONS = (
    ("command", 12),
    ("other bot", 6),
    ("mention", 14),
    ("reply", 12),
    ("chatter", 30),
    ("service", 12),
    ("edit", 7),
    ("callback", 7),
)
_SERVICES = ("new_chat_members", "left_chat_member", "pinned_message", "new_chat_title")
_MENTION = f"@{BOT_USERNAME}"


class Traffic:
    """The pushes of ``users`` simulated users (and ``groups`` groups) into ``chats``."""

    def __init__(
        self,
        chats: Chats,
        *,
        users: int,
        voice_share: float,
        groups: int,
        group_share: float,
        mix: bool,
        seed: int,
    ) -> None:
        self.chats = chats
        self.users = users
        self.voice_share = voice_share
        self.groups = groups
        self.group_share = group_share if groups > 0 else 0.0
        self.mix = mix
        self._random = random.Random(seed)
        self._private = 0  # private pushes so far (the mix's rotation counts them)
        self._group_times: dict[int, deque[float]] = {}
        self._group_pushes: dict[int, int] = {}
        self._last_text: dict[int, int] = {}  # group -> last user text message id

    def group_id(self, index: int) -> int:
        """The chat id of group ``index`` (now: a migrated group's supergroup)."""
        if self.mix and index == 0:
            return self.chats.current_id(BASIC_GROUP_ID)
        return FIRST_GROUP_ID - index

    def step(self, index: int, now: float) -> str:
        """Make push number ``index`` at time ``now`` (seconds); the log line."""
        user_id = FIRST_USER_ID + index % self.users
        if self.group_share and self._random.random() < self.group_share:
            group = self._random.randrange(self.groups)
            if self._group_admits(group, now):
                return self._group_step(group, user_id, index)
        return self._private_step(index, user_id)

    # -- private chats -------------------------------------------------------------------------

    def _private_step(self, index: int, user_id: int) -> str:
        self._private += 1
        text = f"{self._random.choice(PHRASES)} (#{index + 1})"
        voice = self._random.random() < self.voice_share
        special = self._special() if self.mix else None
        chats = self.chats
        if special is None:
            if voice:
                return self._voice(user_id, user_id, text)
            return self._text(user_id, user_id, text)
        if special == "long message":
            filler = (text + " ") * (LONG_MESSAGE // len(text) + 1)
            return self._text(user_id, user_id, filler[:LONG_MESSAGE])
        if special.startswith("#"):
            return self._text(user_id, user_id, f"{text} {special}")
        if special == "sticker":
            emoji = self._random.choice("😀🐱👍🎉")
            message_id = chats.push_sticker(user_id, user_id, emoji)
            return f"user {user_id} -> chat {user_id} #{message_id} sticker: {emoji!r}"
        if special == "big voice":
            size = MAX_DOWNLOAD_SIZE + 5 * 1024 * 1024
            return self._voice(user_id, user_id, text, file_size=size)
        if special == "empty voice":
            return self._voice(user_id, user_id, "")
        blocker = FIRST_USER_ID + self.users  # writes, then blocks the bot at once
        line = self._text(blocker, blocker, text)
        chats.block(blocker)
        return f"{line}; then user {blocker} blocks the bot"

    def _special(self) -> str | None:
        if self._private % SPECIAL_EVERY:
            return None
        turn = self._private // SPECIAL_EVERY - 1
        if turn < len(_FIRST_ROUND):
            return _FIRST_ROUND[turn]
        return _SPECIALS[(turn - len(_FIRST_ROUND)) % len(_SPECIALS)]

    # -- groups --------------------------------------------------------------------------------

    def _group_admits(self, group: int, now: float) -> bool:
        times = self._group_times.setdefault(group, deque())
        while times and times[0] <= now - 60.0:
            times.popleft()
        if len(times) >= GROUP_RATE:
            return False
        times.append(now)
        return True

    def _group_step(self, group: int, user_id: int, index: int) -> str:
        chat_id = self.group_id(group)
        pushes = self._group_pushes[group] = self._group_pushes.get(group, 0) + 1
        phrase = f"{self._random.choice(PHRASES)} (#{index + 1})"
        if not self.mix:
            if self._random.random() < self.voice_share:
                return self._voice(chat_id, user_id, phrase, caption=_MENTION)
            return self._text(chat_id, user_id, f"{_MENTION} {phrase}")
        if pushes == 1:
            message_id = self.chats.add_bot(chat_id, user_id)
            return f"user {user_id} adds the bot to chat {chat_id} #{message_id}"
        if group == 0 and pushes == MIGRATE_AFTER and chat_id == BASIC_GROUP_ID:
            new_id = self.chats.migrate(chat_id, user_id=user_id)
            return f"user {user_id} upgrades chat {chat_id} to supergroup {new_id}"
        names = [name for name, _ in _GROUP_ACTIONS]
        action = self._random.choices(names, [w for _, w in _GROUP_ACTIONS])[0]
        return self._group_action(action, chat_id, user_id, phrase)

    def _group_action(self, action: str, chat_id: int, user_id: int, phrase: str) -> str:
        chats = self.chats
        bot_message = chats.last_bot_message(chat_id)
        if action == "command":
            command = self._random.choice(("/help", f"/help@{BOT_USERNAME}", f"/start{_MENTION}"))
            return self._text(chat_id, user_id, command)
        if action == "other bot":
            return self._text(chat_id, user_id, "/help@OtherBot")
        if action == "reply" and bot_message is not None:
            return self._text(chat_id, user_id, phrase, reply_to=bot_message)
        if action in ("mention", "reply"):
            return self._text(chat_id, user_id, f"{_MENTION} {phrase}")
        if action == "service":
            return self._service(chat_id, user_id)
        last = self._last_text.get(chat_id)
        if action == "edit" and last is not None:
            update_id = chats.push_edit(chat_id, last, f"{phrase} (editado)")
            return f"user {user_id} edits chat {chat_id} #{last} (update {update_id})"
        if action == "callback" and bot_message is not None:
            update_id = chats.push_callback_query(chat_id, user_id, bot_message, "sandbox")
            return f"user {user_id} presses a button under chat {chat_id} #{bot_message}"
        return self._text(chat_id, user_id, phrase)  # chatter among people

    def _service(self, chat_id: int, user_id: int) -> str:
        chats = self.chats
        kind = self._random.choice(_SERVICES)
        someone = FIRST_USER_ID + self.users + 1 + self._random.randrange(50)
        pinned = self._last_text.get(chat_id)
        if kind == "new_chat_title":
            title = f"Grupo {self._random.randrange(100)}"
            message_id = chats.push_service(chat_id, user_id, kind, title=title)
        elif kind == "pinned_message" and pinned is not None:
            message_id = chats.push_service(chat_id, user_id, kind, message_id=pinned)
        else:
            kind = "left_chat_member" if kind == "left_chat_member" else "new_chat_members"
            message_id = chats.push_service(chat_id, user_id, kind, users=[someone])
        return f"user {user_id} -> chat {chat_id} #{message_id} service: {kind}"

    # -- pushes --------------------------------------------------------------------------------

    def _text(self, chat_id: int, user_id: int, text: str, *, reply_to: int | None = None) -> str:
        message_id = self.chats.push_text(chat_id, user_id, text, reply_to=reply_to)
        if chat_id < 0:
            self._last_text[self.chats.current_id(chat_id)] = message_id
        about = "" if reply_to is None else f" (reply to #{reply_to})"
        return f"user {user_id} -> chat {chat_id} #{message_id} text{about}: {quoted(text)}"

    def _voice(
        self,
        chat_id: int,
        user_id: int,
        transcript: str,
        *,
        file_size: int | None = None,
        caption: str | None = None,
    ) -> str:
        message_id = self.chats.push_voice(
            chat_id, user_id, transcript, file_size=file_size, caption=caption
        )
        size = "" if file_size is None else f" of {file_size} bytes"
        return f"user {user_id} -> chat {chat_id} #{message_id} voice{size}: {quoted(transcript)}"


def quoted(text: str, limit: int = 160) -> str:
    """``text`` ``repr``-quoted for a log line (never markup), shortened past ``limit``."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"
