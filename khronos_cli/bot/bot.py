"""The bot: the only code that knows both Telegram and the LLMs.

For each journaled update it works out the answer — a command (``/start``, ``/help``,
``/reset``), a text message answered by Anthropic with the chat's recent history, or a voice note
transcribed by OpenAI and then answered — records it in the outbox in one transaction with the
update (``Store.record_reply``), and delivers it. When Anthropic fails or its breaker rejects,
OpenAI answers; when both fail the user gets the seed's fallback text, never silence.

User text is data: it is sent as plain text (no ``parse_mode``) and never logged in full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from khronos_cli.bot.store import OutboxMessage, Store
from khronos_cli.errors import CircuitOpenError, KhronosError
from khronos_cli.upstream.base import Guard, through
from khronos_cli.upstream.llm import AnthropicClient, OpenAIClient, Turn
from khronos_cli.upstream.telegram import TelegramClient

__all__ = ["FALLBACK_TEXT", "Bot"]

logger = logging.getLogger("khronos.bot")

T = TypeVar("T")

FALLBACK_TEXT = "IA indisponível agora. Tente novamente em alguns segundos."
START_TEXT = "Olá! Send me a message or a voice note and I will answer. /help for more."
HELP_TEXT = (
    "Send text or a voice note and I answer with an AI model.\n"
    "/reset forgets this conversation.\n/help shows this message."
)
RESET_TEXT = "Conversation forgotten. Let's start again."
UNSUPPORTED_TEXT = "I can read text messages and voice notes."
SYSTEM_PROMPT = "You are a helpful assistant in a Telegram chat. Answer briefly and plainly."


class Bot:
    """Answers updates. ``db_guard`` is the ``database`` breaker's guard for store calls."""

    def __init__(
        self,
        store: Store,
        telegram: TelegramClient,
        anthropic: AnthropicClient,
        openai: OpenAIClient,
        *,
        db_guard: Guard | None = None,
        history_turns: int = 20,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        self.store = store
        self.telegram = telegram
        self.anthropic = anthropic
        self.openai = openai
        self._db_guard = db_guard
        self.history_turns = history_turns
        self.system_prompt = system_prompt
        self.answered = {"anthropic": 0, "openai": 0, "fallback": 0, "command": 0}

    async def db(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one store call through the ``database`` breaker."""
        return await through(self._db_guard, fn, *args, **kwargs)

    async def process(self, update_id: int, chat_id: int, payload: dict[str, Any]) -> OutboxMessage:
        """Answer one journaled update and record the reply; returns the outbox row to send."""
        message = payload.get("message") or {}
        user_id = (message.get("from") or {}).get("id", chat_id)
        reply, said, remember = await self.answer(chat_id, user_id, message)
        reply_to = message.get("message_id")
        outbox_id = await self.db(
            self.store.record_reply,
            update_id,
            chat_id,
            reply,
            reply_to,
            user_text=said,
            remember=remember,
        )
        return OutboxMessage(
            id=outbox_id, chat_id=chat_id, text=reply, reply_to_message_id=reply_to,
            update_id=update_id, source="reply", attempts=0, last_error=None,
            created_at=time.time(),
        )  # fmt: skip

    async def answer(
        self, chat_id: int, user_id: int, message: dict[str, Any]
    ) -> tuple[str, str | None, bool]:
        """The reply, what the user said (a voice note's transcript), and whether the exchange
        belongs in the conversation history (commands and failures do not)."""
        text = message.get("text")
        if isinstance(text, str) and text.startswith("/"):
            command = text.split()[0].split("@")[0].lower()
            if command in ("/start", "/help", "/reset"):
                self.answered["command"] += 1
                if command == "/reset":
                    await self.db(self.store.reset, chat_id)
                    return RESET_TEXT, None, False
                return (START_TEXT if command == "/start" else HELP_TEXT), None, False
        if "voice" in message:
            said = await self.transcribe(user_id, message["voice"])
            if said is None:
                self.answered["fallback"] += 1
                return FALLBACK_TEXT, None, False
            answer = await self.reply(chat_id, user_id, said)
            return answer, said, answer != FALLBACK_TEXT
        if not isinstance(text, str) or not text.strip():
            return UNSUPPORTED_TEXT, None, False
        answer = await self.reply(chat_id, user_id, text)
        return answer, None, answer != FALLBACK_TEXT

    async def transcribe(self, user_id: int, voice: dict[str, Any]) -> str | None:
        try:
            meta = await self.telegram.get_file(str(voice["file_id"]))
            audio = await self.telegram.download_file(str(meta["file_path"]))
            return await self.openai.transcribe(audio, key=user_id)
        except (KhronosError, KeyError) as exc:
            logger.warning("could not transcribe a voice note: %s", exc)
            return None

    async def reply(self, chat_id: int, user_id: int, text: str) -> str:
        """Anthropic, else OpenAI, else the fallback text."""
        past = await self.db(self.store.history, chat_id, self.history_turns)
        turns: list[Turn] = [{"role": t.role, "content": t.text} for t in past]
        turns.append({"role": "user", "content": text})
        try:
            answer = await self.anthropic.reply(turns, system=self.system_prompt, key=user_id)
            self.answered["anthropic"] += 1
            return answer or FALLBACK_TEXT
        except KhronosError as exc:  # an open breaker is expected news, not a new warning
            log = logger.debug if isinstance(exc, CircuitOpenError) else logger.warning
            log("anthropic failed, asking openai: %s", exc)
        try:
            answer = await self.openai.reply(turns, system=self.system_prompt, key=user_id)
            self.answered["openai"] += 1
            return answer or FALLBACK_TEXT
        except KhronosError as exc:
            log = logger.debug if isinstance(exc, CircuitOpenError) else logger.warning
            log("openai failed too, answering the fallback text: %s", exc)
        self.answered["fallback"] += 1
        return FALLBACK_TEXT
