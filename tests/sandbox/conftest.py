"""The sandbox tests' shared fixtures: a fresh LLM stand-in of each provider on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from khronos_cli.sandbox import AnthropicStandIn, OpenAIStandIn


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicStandIn]:
    async with AnthropicStandIn() as stand_in:
        yield stand_in


@pytest.fixture
async def openai() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn() as stand_in:
        yield stand_in
