"""A hanging or stalling Anthropic, with the default breaker timeouts, through the real worker."""

from __future__ import annotations

from typing import Any

from tests.support import wait_for

# Every default (the anthropic-api breaker's timeout is 30.5 s) but the stream's own limits.
STREAM_LIMITS = """
[anthropic]
first_byte_timeout = "1s"
stall_timeout = "1s"
"""


def test_a_hanging_or_stalling_anthropic_is_answered_by_openai(make_instance: Any) -> None:
    """Anthropic hanging (no headers), then stalling mid-stream: the user is answered by
    OpenAI well before the breaker's 30.5 s timeout, and the log names which limit caught it."""
    instance = make_instance(config=STREAM_LIMITS).start()
    instance.llm_mode("anthropic", mode="hang")
    instance.push(3001, "are you there")
    wait_for(lambda: len(instance.deliveries()) == 1, timeout=20)
    instance.llm_mode("anthropic", mode="stall")
    instance.push(3002, "still there")
    wait_for(lambda: len(instance.deliveries()) == 2, timeout=20)
    texts = sorted(d["text"] for d in instance.deliveries())
    assert texts == ["openai echo: are you there", "openai echo: still there"]
    log = instance.log()
    assert "sent no first event within 1s" in log and "stalled: no event for 1s" in log
