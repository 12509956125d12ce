"""Who answers: Anthropic, else OpenAI, else the fallback text — and, when the operator asks for
it, OpenAI early when Anthropic is slower than it has ever been.

The chain (what the bot and ``POST /chat`` share): Anthropic first; when it fails, its breaker
rejects, or it answers nothing or refuses, OpenAI; when both fail, the seed's fallback text, never
silence. A provider that another way had to stand in for counts as a fallback of its breaker
(``on_fallback``: the ``fb`` column of ``khronos breakers``).

**Hedging** (``[bot] hedge_after``, off by default). A hanging API accepts the request and never
answers. The clients stream their answers, so a hang is caught by the stream's own limits (no
headers and first event within ``first_byte_timeout``, 5 s; no event for ``stall_timeout``, 10 s)
long before the breaker's whole-answer timeout (30.5 s for 1,024 tokens), and OpenAI answers;
hedging is for operators who want even that wait shorter, at the price of a second answer for
every answer slower than the delay. When it is on and Anthropic has not answered within
:meth:`Hedge.delay` of the request leaving (its limiter's wait is the user's own pace, not
counted) — three times the p90 of its last 100 answers, at least ``hedge_after``, never past its
timeout — OpenAI is asked too and the first good answer wins. The loser is cancelled when
Anthropic wins (a cancelled call counts for nothing); when OpenAI wins, Anthropic's call is left
to finish in the background, so that its breaker still learns of the hang (its timeouts open it,
and from then on OpenAI answers at once).
``benchmarks/outage.py`` measures what users wait when Anthropic starts to hang.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from khronos_cli.bot import messages as say
from khronos_cli.errors import CircuitOpenError, KhronosError
from khronos_cli.upstream.llm import Answer, AnthropicClient, OpenAIClient, Turn

__all__ = ["Failover", "Hedge", "Reply"]

logger = logging.getLogger("khronos.bot")

Provider = Literal["anthropic", "openai"]
PROVIDERS: tuple[Provider, ...] = ("anthropic", "openai")  # the order they are asked in


@dataclass(frozen=True)
class Reply:
    """What the chain answered, and who: ``anthropic``, ``openai``, or the ``fallback`` text."""

    text: str
    answered_by: Literal["anthropic", "openai", "fallback"]


class Hedge:
    """How long to wait for the first provider before asking the second as well."""

    def __init__(
        self, *, floor: float = 3.0, factor: float = 3.0, ceiling: float = float("inf")
    ) -> None:
        self.floor, self.factor, self.ceiling = floor, factor, ceiling
        self._recent: collections.deque[float] = collections.deque(maxlen=100)
        self.hedged = 0  # calls that asked the second provider too

    def observe(self, seconds: float) -> None:
        """A good answer took ``seconds``."""
        self._recent.append(seconds)

    def delay(self) -> float:
        ordered = sorted(self._recent)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else 0.0
        return min(self.ceiling, max(self.floor, self.factor * p90))


class Failover:
    """The answer chain; ``answered`` counts who answered (the bot's counters)."""

    def __init__(
        self,
        anthropic: AnthropicClient,
        openai: OpenAIClient,
        *,
        system_prompt: str,
        answered: dict[str, int],
        hedge: Hedge | None = None,
        on_fallback: Callable[[str, BaseException | None], object] | None = None,
    ) -> None:
        self.anthropic = anthropic
        self.openai = openai
        self.system_prompt = system_prompt
        self.answered = answered
        self.hedge = hedge
        self._on_fallback = on_fallback
        self._slow: set[asyncio.Task[Any]] = set()  # Anthropic calls OpenAI answered before

    async def ask(self, turns: Sequence[Turn], *, key: Hashable) -> Reply:
        """Anthropic, else OpenAI (also once Anthropic is slow), else the fallback text."""
        if self.hedge is None:
            return await self._in_turn(turns, key)
        loop = asyncio.get_running_loop()
        sending = asyncio.Event()
        first = loop.create_task(
            self.anthropic.reply(turns, system=self.system_prompt, key=key, sending=sending)
        )
        hedge = self.hedge
        try:
            started = await self._sent(first, sending)
            delay = None if hedge is None else hedge.delay()
            done, _ = await asyncio.wait({first}, timeout=delay)
        except asyncio.CancelledError:
            first.cancel()
            raise
        if not done:
            return await self._race(first, turns, key)
        answer = self._good("anthropic", first)
        if answer is not None:
            if hedge is not None:
                hedge.observe(loop.time() - started)
            return self._answered("anthropic", answer)
        return await self._second(turns, key)

    async def _in_turn(self, turns: Sequence[Turn], key: Hashable) -> Reply:
        """Without hedging nothing races: each provider is awaited in this task, in turn."""
        for provider in PROVIDERS:
            try:
                answer = await self._call(provider, turns, key)
            except KhronosError as error:
                self._failed(provider, error)
                continue
            if self._usable(provider, answer):
                return self._answered(provider, answer)
        return self._fallback()

    @staticmethod
    async def _sent(first: asyncio.Task[Answer], sending: asyncio.Event) -> float:
        """Wait until the request has left (the per-user limiter's wait is the user's own pace,
        not the API's slowness) or ended; the loop time it left."""
        leaving = asyncio.get_running_loop().create_task(sending.wait())
        try:
            await asyncio.wait({first, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
        return asyncio.get_running_loop().time()

    async def _second(self, turns: Sequence[Turn], key: Hashable) -> Reply:
        second = asyncio.get_running_loop().create_task(self._call("openai", turns, key))
        try:
            await asyncio.wait({second})
        except asyncio.CancelledError:
            second.cancel()
            raise
        answer = self._good("openai", second)
        return self._answered("openai", answer) if answer is not None else self._fallback()

    async def _race(
        self, first: asyncio.Task[Answer], turns: Sequence[Turn], key: Hashable
    ) -> Reply:
        assert self.hedge is not None
        self.hedge.hedged += 1
        logger.info("anthropic has not answered in %.1fs: asking openai too", self.hedge.delay())
        second = asyncio.get_running_loop().create_task(self._call("openai", turns, key))
        pending: set[asyncio.Task[Answer]] = {first, second}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if first in done and (answer := self._good("anthropic", first)) is not None:
                    second.cancel()
                    return self._answered("anthropic", answer)
                if second in done and (answer := self._good("openai", second)) is not None:
                    if first in pending:  # let it end by itself: its breaker learns of the hang
                        self._fell_back("anthropic-api", None)
                        self._slow.add(first)
                        first.add_done_callback(self._slow.discard)
                    return self._answered("openai", answer)
        except asyncio.CancelledError:
            first.cancel()
            second.cancel()
            raise
        return self._fallback()

    async def _call(self, provider: Provider, turns: Sequence[Turn], key: Hashable) -> Answer:
        client = self.anthropic if provider == "anthropic" else self.openai
        return await client.reply(turns, system=self.system_prompt, key=key)

    def _good(self, provider: Provider, task: asyncio.Task[Answer]) -> Answer | None:
        """The task's answer when it is one to give; else say why and count the fallback.
        OpenAI is the last provider: its refusal, in its own words, is still the answer."""
        error = task.exception()
        if error is not None:
            if not isinstance(error, KhronosError):
                raise error
            self._failed(provider, error)
            return None
        answer = task.result()
        return answer if self._usable(provider, answer) else None

    def _failed(self, provider: Provider, error: KhronosError) -> None:
        log = logger.debug if isinstance(error, CircuitOpenError) else logger.warning
        log("%s failed: %s", provider, error)
        self._fell_back(f"{provider}-api", error)

    @staticmethod
    def _usable(provider: Provider, answer: Answer) -> bool:
        if answer.text and (not answer.refused or provider == "openai"):
            return True
        logger.info("%s %s", provider, "refused" if answer.refused else "answered nothing")
        return False

    def _answered(self, provider: Provider, answer: Answer) -> Reply:
        self.answered[provider] += 1
        return Reply(shown(answer), provider)

    def _fallback(self) -> Reply:
        logger.info("no provider answered: answering the fallback text")
        self.answered["fallback"] += 1
        return Reply(say.FALLBACK_TEXT, "fallback")

    def _fell_back(self, breaker: str, error: BaseException | None) -> None:
        if self._on_fallback is not None:
            self._on_fallback(breaker, error)

    @property
    def slow_calls(self) -> int:
        """Anthropic calls still running after OpenAI answered for them."""
        return len(self._slow)

    async def aclose(self) -> None:
        """Cancel the slow Anthropic calls still running after OpenAI answered for them."""
        for task in list(self._slow):
            task.cancel()
        await asyncio.gather(*self._slow, return_exceptions=True)


def shown(answer: Answer) -> str:
    """The text a user sees: a cut answer says so."""
    return answer.text + say.CUT_NOTE if answer.cut else answer.text
