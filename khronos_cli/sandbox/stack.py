"""The whole sandbox at once: Telegram, Anthropic and OpenAI stand-ins on loopback ports.

``async with SandboxStack() as stack:`` starts the three stand-ins (each on a free port unless
told otherwise) and stops them all on exit, even when one of them failed to start. The stand-ins
are created in ``__init__`` so a caller can configure them (modes, flood limits) before starting;
``llm_latency`` and ``token_latency`` (seconds per output token) set both LLM stand-ins' latency.
``stack.configure(settings)`` points a :class:`~khronos_cli.config.Settings` at them (in-process
bot); ``stack.env()`` and ``stack.config_toml()`` do the same for a bot subprocess: the fake
secrets as environment variables and the base URLs as a ``khronos.toml`` fragment.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from khronos_cli.config import Secret, Settings
from khronos_cli.sandbox._server import LOOPBACK, LoopbackServer
from khronos_cli.sandbox.anthropic_api import AnthropicStandIn
from khronos_cli.sandbox.flood import FloodLimits
from khronos_cli.sandbox.openai_api import OpenAIStandIn
from khronos_cli.sandbox.telegram import SANDBOX_TOKEN, TelegramStandIn
from khronos_cli.sandbox.users import SimulatedUsers

__all__ = ["ANTHROPIC_SANDBOX_KEY", "OPENAI_SANDBOX_KEY", "SandboxStack"]

ANTHROPIC_SANDBOX_KEY = "sk-ant-sandbox-not-a-real-key"
OPENAI_SANDBOX_KEY = "sk-sandbox-not-a-real-key"


class SandboxStack:
    """Telegram + Anthropic + OpenAI stand-ins, started and stopped together."""

    def __init__(
        self,
        *,
        token: str = SANDBOX_TOKEN,
        other_tokens: Sequence[str] = (),
        flood_limits: FloodLimits | None = None,
        llm_latency: float = 0.0,
        token_latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        host: str = LOOPBACK,
    ) -> None:
        self.token = token
        self.anthropic_api_key = ANTHROPIC_SANDBOX_KEY
        self.openai_api_key = OPENAI_SANDBOX_KEY
        self.telegram = TelegramStandIn(
            token=token, flood_limits=flood_limits, clock=clock, host=host
        )
        for other in other_tokens:  # more bots on the same stand-in, each its own
            self.telegram.add_bot(other)
        self.anthropic = AnthropicStandIn(
            api_key=self.anthropic_api_key,
            latency=llm_latency,
            token_latency=token_latency,
            host=host,
        )
        self.openai = OpenAIStandIn(
            api_key=self.openai_api_key,
            latency=llm_latency,
            token_latency=token_latency,
            host=host,
        )

    @property
    def servers(self) -> tuple[LoopbackServer, ...]:
        return (self.telegram, self.anthropic, self.openai)

    @property
    def telegram_base_url(self) -> str:
        return self.telegram.base_url

    @property
    def anthropic_base_url(self) -> str:
        return self.anthropic.base_url

    @property
    def openai_base_url(self) -> str:
        return self.openai.base_url

    async def start(self) -> Self:
        """Start every stand-in; if one fails, stop those already started and re-raise."""
        try:
            for server in self.servers:
                await server.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Stop every stand-in (each one even if another fails to stop)."""
        errors: list[BaseException] = []
        for server in reversed(self.servers):
            try:
                await server.aclose()
            except Exception as exc:  # keep closing the others, re-raise the first below
                errors.append(exc)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def env(self) -> dict[str, str]:
        """The environment a bot process needs: the fake token and API keys."""
        return {
            "TELEGRAM_BOT_TOKEN": self.token,
            "ANTHROPIC_API_KEY": self.anthropic_api_key,
            "OPENAI_API_KEY": self.openai_api_key,
        }

    def configure(self, settings: Settings) -> Settings:
        """``settings`` pointed at the stand-ins: their base URLs and the fake secrets."""
        return dataclasses.replace(
            settings,
            telegram_token=Secret(self.token),
            anthropic_api_key=Secret(self.anthropic_api_key),
            openai_api_key=Secret(self.openai_api_key),
            telegram_base_url=self.telegram_base_url,
            anthropic_base_url=self.anthropic_base_url,
            openai_base_url=self.openai_base_url,
        )

    def config_toml(self) -> str:
        """A ``khronos.toml`` fragment pointing the bot at the stand-ins."""
        return (
            f'[telegram]\nbase_url = "{self.telegram_base_url}"\n\n'
            f'[anthropic]\nbase_url = "{self.anthropic_base_url}"\n\n'
            f'[openai]\nbase_url = "{self.openai_base_url}"\n'
        )

    def users(self, **options: Any) -> SimulatedUsers:
        """:class:`SimulatedUsers` writing into this stack's Telegram (same keyword options)."""
        return SimulatedUsers(self.telegram, **options)
