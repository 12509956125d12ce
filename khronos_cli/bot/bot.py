"""The bot: the only code that knows both Telegram and the LLMs.

For each journaled update it decides whether to answer (:mod:`.updates`: service messages, edits
and group chatter not addressed to it get nothing) and works out the answer — a command
(``/start``, ``/help``, ``/reset``), a text message answered by Anthropic with the chat's recent
history, or a voice note transcribed by OpenAI and then answered — then records it in the outbox in
one transaction with the update (``Store.record_reply``), split into parts that fit Telegram
(:mod:`.messages`), and the caller delivers them. A group's upgrade to a supergroup moves its
history to the new chat id.

Answers (:meth:`Bot.ask`, the chain ``POST /chat`` shares) come from :mod:`.failover`: Anthropic
first, OpenAI when it fails, refuses or is slower than it has ever been, the seed's fallback text
when both fail, never silence. An answer the model cut at its output cap is marked as cut. The
conversation sent to a model always starts with a
user turn and alternates (consecutive turns of one role are merged). While a model writes, the
chat shows "typing…" (``sendChatAction`` once the answer has taken a second, then every 4.5 s;
never retried, never counted against a breaker, skipped while Telegram is unhealthy or the chat
is halted by a 429).

User text is data: it is sent as plain text (no ``parse_mode``) and never logged in full.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from khronos_cli.bot import messages as say
from khronos_cli.bot.failover import Failover, Hedge, Reply
from khronos_cli.bot.store import OutboxMessage, Store
from khronos_cli.bot.updates import GroupPolicy, Identity, deserves_answer, read_update
from khronos_cli.errors import KhronosError, UpstreamError
from khronos_cli.upstream.base import Guard, through
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient, Turn
from khronos_cli.upstream.telegram import MAX_DOWNLOAD, TelegramClient

__all__ = ["FALLBACK_TEXT", "HELP_TEXT", "RESET_TEXT", "Bot", "Reply"]

logger = logging.getLogger("khronos.bot")

T = TypeVar("T")

FALLBACK_TEXT = say.FALLBACK_TEXT
HELP_TEXT = say.HELP_TEXT
RESET_TEXT = say.RESET_TEXT
SYSTEM_PROMPT = "You are a helpful assistant in a Telegram chat. Answer briefly and plainly."
TYPING_AFTER = 1.0  # an answer quicker than this needs no "typing…" (one request saved)
TYPING_EVERY = 4.5  # a chat action shows for at most 5 s
COMMANDS = ("/start", "/help", "/reset")


class Bot:
    """Answers updates. ``db_guard`` is the ``database`` breaker's guard for store calls;
    ``may_type(chat_id)`` says whether a "typing…" action may be sent now;
    ``on_fallback(breaker, error)`` hears each provider another way had to stand in for;
    ``hedge`` says when a slow Anthropic makes OpenAI ask too (:class:`.failover.Hedge`)."""

    def __init__(
        self,
        store: Store,
        telegram: TelegramClient,
        anthropic: AnthropicClient,
        openai: OpenAIClient,
        *,
        db_guard: Guard | None = None,
        history_turns: int = 20,
        groups: GroupPolicy = "addressed",
        system_prompt: str = SYSTEM_PROMPT,
        may_type: Callable[[int], bool] | None = None,
        on_fallback: Callable[[str, BaseException | None], object] | None = None,
        hedge: Hedge | None = None,
    ) -> None:
        self.store = store
        self.telegram = telegram
        self.anthropic = anthropic
        self.openai = openai
        self._db_guard = db_guard
        self.history_turns = history_turns
        self.groups = groups
        self.system_prompt = system_prompt
        self._may_type = may_type
        self.identity: Identity | None = None
        self.answered = {"anthropic": 0, "openai": 0, "fallback": 0, "command": 0, "other": 0}
        self.failover = Failover(
            anthropic,
            openai,
            system_prompt=system_prompt,
            answered=self.answered,
            hedge=hedge,
            on_fallback=on_fallback,
        )
        self.skipped = 0
        self.migrations: set[tuple[int, int]] = set()  # (old, new) chat ids seen here

    async def db(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one store call through the ``database`` breaker."""
        return await through(self._db_guard, fn, *args, **kwargs)

    async def me(self) -> Identity:
        """The bot's own user (``getMe``, asked once): what group messages address."""
        if self.identity is None:
            user = await self.telegram.get_me()
            self.identity = Identity(int(user["id"]), str(user.get("username") or ""))
            logger.info("this bot is @%s (id %d)", self.identity.username, self.identity.id)
        return self.identity

    async def process(
        self, update_id: int, chat_id: int, payload: dict[str, Any]
    ) -> list[OutboxMessage]:
        """Answer one journaled update and record the reply; returns the outbox rows to send
        (none when the update deserves no answer: it is then recorded as done)."""
        incoming = read_update(payload, chat_id)
        if incoming.migration is not None:
            old, new = incoming.migration
            moved = await self.db(self.store.migrate_chat, old, new)
            if (old, new) not in self.migrations:
                self.migrations.add((old, new))
                logger.info("chat %d became supergroup %d: moved %s", old, new, moved)
        me = None if incoming.private or incoming.message is None else await self.me()
        if not deserves_answer(incoming, me, self.groups):
            await self.db(self.store.skip, update_id)
            self.skipped += 1
            return []
        message = incoming.message or {}
        reply, said, remember = await self.answer(chat_id, incoming.user_id, message)
        return await self.db(
            self.store.record_reply,
            update_id,
            chat_id,
            say.split_message(reply) or [say.FALLBACK_TEXT],
            message.get("message_id"),
            user_text=said,
            remember=remember,
        )

    async def answer(
        self, chat_id: int, user_id: int, message: dict[str, Any]
    ) -> tuple[str, str | None, bool]:
        """The reply, what the user said (a voice note's transcript), and whether the exchange
        belongs in the conversation history (commands and failures do not)."""
        text = message.get("text")
        if isinstance(text, str) and text.startswith("/"):
            command = text.split()[0].split("@")[0].lower() if text.split() else ""
            if command in COMMANDS:
                self.answered["command"] += 1
                if command == "/reset":
                    await self.db(self.store.reset, chat_id)
                    return say.RESET_TEXT, None, False
                return (say.START_TEXT if command == "/start" else say.HELP_TEXT), None, False
        if isinstance(message.get("voice"), dict):
            return await self.answer_voice(chat_id, user_id, message["voice"])
        if not isinstance(text, str) or not text.strip():
            self.answered["other"] += 1
            return say.UNSUPPORTED_TEXT, None, False
        answer = await self.reply(chat_id, user_id, text)
        return answer, None, answer != say.FALLBACK_TEXT

    async def answer_voice(
        self, chat_id: int, user_id: int, voice: dict[str, Any]
    ) -> tuple[str, str | None, bool]:
        size = voice.get("file_size")
        if isinstance(size, int) and size > MAX_DOWNLOAD:
            self.answered["other"] += 1
            return say.VOICE_TOO_BIG_TEXT, None, False
        try:
            said = await self.transcribe(chat_id, user_id, voice)
        except _TooBig:
            self.answered["other"] += 1
            return say.VOICE_TOO_BIG_TEXT, None, False
        if said is None:
            self.answered["fallback"] += 1
            return say.FALLBACK_TEXT, None, False
        if not said.strip():
            self.answered["other"] += 1
            return say.VOICE_EMPTY_TEXT, None, False
        answer = await self.reply(chat_id, user_id, said)
        return answer, said, answer != say.FALLBACK_TEXT

    async def transcribe(self, chat_id: int, user_id: int, voice: dict[str, Any]) -> str | None:
        """The voice note's words ("" when none were heard), or None when it could not be done."""
        duration = voice.get("duration")
        seconds = float(duration) if isinstance(duration, int | float) else 0.0
        try:
            async with self.typing(chat_id, "record_voice"):
                meta = await self.telegram.get_file(str(voice["file_id"]))
                audio = await self.telegram.download_file(str(meta["file_path"]))
                return await self.openai.transcribe(audio, duration=seconds, key=user_id)
        except UpstreamError as exc:
            if exc.status == 400 and "too big" in str(exc).lower():
                raise _TooBig from None
            logger.warning("could not transcribe a voice note: %s", exc)
        except (KhronosError, KeyError) as exc:
            logger.warning("could not transcribe a voice note: %s", exc)
        return None

    async def reply(self, chat_id: int, user_id: int, text: str) -> str:
        """The answer to ``text`` in ``chat_id``, with the chat's history, showing "typing…"."""
        past = await self.db(self.store.history, chat_id, self.history_turns)
        turns = conversation([(t.role, t.text) for t in past], text)
        async with self.typing(chat_id):
            return (await self.ask(turns, key=user_id)).text

    async def ask(self, turns: Sequence[Turn], *, key: Hashable) -> Reply:
        """Anthropic, else OpenAI, else the fallback text (:mod:`.failover`); counted in
        :attr:`answered`."""
        return await self.failover.ask(turns, key=key)

    def typing(self, chat_id: int, action: str = "typing") -> _Typing:
        """Show ``action`` in the chat while the body of ``async with`` runs (once it has run
        ``TYPING_AFTER``: a timer until then, not a task, since most answers come sooner)."""
        return _Typing(self, chat_id, action)

    async def _keep_typing(self, chat_id: int, action: str) -> None:
        while True:
            if self._may_type is None or self._may_type(chat_id):
                try:
                    await self.telegram.send_chat_action(chat_id, action)
                except KhronosError as exc:
                    logger.debug("chat action for %d not shown: %s", chat_id, exc)
            await asyncio.sleep(TYPING_EVERY)


class _Typing:
    """:meth:`Bot.typing`'s context: a class, not a generator (one of these per answer)."""

    __slots__ = ("_action", "_bot", "_chat_id", "_task", "_timer")

    def __init__(self, bot: Bot, chat_id: int, action: str) -> None:
        self._bot = bot
        self._chat_id = chat_id
        self._action = action
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(TYPING_AFTER, self._start)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def _start(self) -> None:
        coroutine = self._bot._keep_typing(self._chat_id, self._action)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(coroutine, name=f"typing-{self._chat_id}")


class _TooBig(Exception):
    """Telegram will not hand the bot this file (over its 20 MB download limit)."""


def conversation(past: list[tuple[str, str]], text: str) -> list[Turn]:
    """The turns to send a model: ``past`` (oldest first) and the user's ``text``, starting with
    a user turn, alternating (turns of one role in a row are merged), never an empty turn."""
    turns: list[Turn] = []
    for role, said in [*past, ("user", text)]:
        if not said.strip():
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": turns[-1]["content"] + "\n\n" + said}
        elif turns or role == "user":
            turns.append({"role": role, "content": said})
    return turns
