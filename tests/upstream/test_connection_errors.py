"""Connection failures named for what they are, through the transports the worker uses."""

from __future__ import annotations

import httpx
import pytest

from khronos_cli.config import Secret
from khronos_cli.errors import UpstreamError
from khronos_cli.upstream.faults import FaultInjector
from khronos_cli.upstream.llm import AnthropicClient
from khronos_cli.upstream.transport import FaultTransport, Wire
from tests.support import free_port


async def _fail(base_url: str) -> UpstreamError:
    wire = Wire(limits=httpx.Limits(max_connections=10))
    transport = FaultTransport(wire, FaultInjector(), "anthropic-api")
    async with AnthropicClient(Secret("sk-test"), base_url, transport=transport) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.ping()
    return caught.value


async def test_refused_connection_is_named_refused() -> None:
    """A port nothing listens on is reported as "connection refused", not as a timeout."""
    error = await _fail(f"http://127.0.0.1:{free_port()}")
    assert "connection refused" in str(error) and "timed out" not in str(error)
    assert error.code == "network" and error.is_outage


async def test_unresolvable_host_is_named_not_resolved() -> None:
    """A host DNS cannot resolve is reported as "name not resolved", not as a timeout."""
    error = await _fail("http://khronos-test.invalid")
    assert "name not resolved" in str(error) and "timed out" not in str(error)
    assert error.code == "network" and error.is_outage
