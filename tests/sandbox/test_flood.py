"""Flood control of the Telegram stand-in: 429 with retry_after exactly past each limit."""

from __future__ import annotations

import httpx

from khronos_cli.config import Rate
from khronos_cli.sandbox import SANDBOX_TOKEN, FloodLimits, TelegramStandIn
from khronos_cli.sandbox.flood import FloodControl
from tests.support import Clock

PRIVATE, OTHER, GROUP = 1001, 1002, -1001


def test_private_chat_limit_admits_up_to_the_limit_and_not_one_more() -> None:
    """With 2/10s per chat, the 2nd send in the window passes and the 3rd is refused."""
    clock = Clock()
    flood = FloodControl(FloodLimits(per_chat=Rate(2, 10.0), per_bot=None), clock=clock)
    assert flood.admit(PRIVATE) is None
    clock.now += 4
    assert flood.admit(PRIVATE) is None
    clock.now += 1
    assert flood.admit(PRIVATE) == 5  # the first send leaves the window 5 s from now
    assert flood.admit(OTHER) is None  # another chat has its own window


def test_retry_after_is_whole_seconds_and_honouring_it_is_enough() -> None:
    """retry_after rounds up to whole seconds (>= 1), and a send at that moment is admitted."""
    clock = Clock()
    flood = FloodControl(FloodLimits(per_chat=Rate(1, 3.0), per_bot=None), clock=clock)
    assert flood.admit(PRIVATE) is None
    clock.now += 0.75
    assert flood.admit(PRIVATE) == 3  # 2.25 s left: rounded up, never down
    clock.now += 2.125
    assert flood.admit(PRIVATE) == 1  # 0.125 s left: still at least 1
    clock.now += 0.125
    assert flood.admit(PRIVATE) is None


def test_refused_sends_do_not_count() -> None:
    """A refused send does not use up the window: retrying after retry_after succeeds."""
    clock = Clock()
    flood = FloodControl(FloodLimits(per_chat=Rate(1, 2.0), per_bot=None), clock=clock)
    flood.admit(PRIVATE)
    for _ in range(5):
        assert flood.admit(PRIVATE) == 2
    clock.now += 2
    assert flood.admit(PRIVATE) is None


def test_groups_use_the_group_limit() -> None:
    """A negative chat id is a group: its limit is per_group (20/min by default), not per_chat."""
    clock = Clock()
    flood = FloodControl(FloodLimits(per_bot=None), clock=clock)
    for _ in range(20):
        assert flood.admit(GROUP) is None
    assert flood.admit(GROUP) == 60


def test_bot_wide_limit_spans_chats() -> None:
    """With 3/s for the bot, three different chats pass and the fourth is refused."""
    clock = Clock()
    flood = FloodControl(FloodLimits(per_chat=None, per_bot=Rate(3, 1.0)), clock=clock)
    assert [flood.admit(chat) for chat in (1, 2, 3, 4)] == [None, None, None, 1]


def test_limits_off_admit_everything() -> None:
    """FloodLimits.off() admits any number of sends to one chat."""
    flood = FloodControl(FloodLimits.off(), clock=Clock())
    assert all(flood.admit(PRIVATE) is None for _ in range(1000))


def test_idle_chats_are_forgotten() -> None:
    """Chat windows that emptied are swept, so many chats do not grow memory without bound."""
    clock = Clock()
    flood = FloodControl(FloodLimits(per_bot=None), clock=clock)
    for chat in range(1, 1025):
        flood.admit(chat)
        clock.now += 0.01
    clock.now += 61
    for chat in range(2000, 3024):
        flood.admit(chat)
    assert flood.tracked_chats <= 1024


async def test_send_message_answers_429_with_retry_after() -> None:
    """Past the limit, sendMessage answers Telegram's 429 shape and counts the refusal."""
    clock = Clock()
    limits = FloodLimits(per_chat=Rate(1, 30.0), per_bot=None)
    async with (
        TelegramStandIn(flood_limits=limits, clock=clock) as telegram,
        httpx.AsyncClient(base_url=f"{telegram.base_url}/bot{SANDBOX_TOKEN}") as client,
    ):
        ok = await client.post("/sendMessage", json={"chat_id": PRIVATE, "text": "1"})
        clock.now += 10
        refused = await client.post("/sendMessage", json={"chat_id": PRIVATE, "text": "2"})
    assert ok.status_code == 200
    assert refused.status_code == 429
    assert refused.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 20",
        "parameters": {"retry_after": 20},
    }
    assert telegram.flood_rejections == 1
    assert [d.text for d in telegram.deliveries] == ["1"]


async def test_default_limits_are_telegrams() -> None:
    """By default a second message to one private chat within a second is refused."""
    async with (
        TelegramStandIn(clock=Clock()) as telegram,
        httpx.AsyncClient(base_url=f"{telegram.base_url}/bot{SANDBOX_TOKEN}") as client,
    ):
        first = await client.post("/sendMessage", json={"chat_id": PRIVATE, "text": "1"})
        second = await client.post("/sendMessage", json={"chat_id": PRIVATE, "text": "2"})
    assert (first.status_code, second.status_code) == (200, 429)
    assert second.json()["parameters"] == {"retry_after": 1}


def test_a_forced_chat_is_refused_until_the_time_passes() -> None:
    """force() refuses every send to that chat with the given retry_after for that long, while
    other chats (and the same chat afterwards) are admitted."""
    clock = Clock()
    flood = FloodControl(FloodLimits.off(), clock=clock)
    flood.force(PRIVATE, retry_after=7, seconds=5.0)
    assert [flood.admit(PRIVATE) for _ in range(3)] == [7, 7, 7]
    assert flood.admit(OTHER) is None
    assert flood.admit(GROUP) is None
    assert flood.forced() == {PRIVATE: {"retry_after": 7, "seconds_left": 5.0}}
    clock.now += 5
    assert flood.admit(PRIVATE) is None
    assert flood.forced() == {}


async def test_forced_flood_over_http_is_scoped_to_its_chat() -> None:
    """POST /_sandbox/flood/force makes sendMessage to that chat a 429 with its retry_after and
    leaves other chats alone."""
    async with (
        TelegramStandIn(flood_limits=FloodLimits.off()) as telegram,
        httpx.AsyncClient(base_url=telegram.base_url) as http,
    ):
        forced = await http.post(
            "/_sandbox/flood/force", json={"chat_id": GROUP, "retry_after": 13, "seconds": 60}
        )
        api = f"/bot{SANDBOX_TOKEN}/sendMessage"
        refused = await http.post(api, json={"chat_id": GROUP, "text": "x"})
        other = await http.post(api, json={"chat_id": OTHER, "text": "y"})
        bad = await http.post(
            "/_sandbox/flood/force", json={"chat_id": GROUP, "retry_after": 0, "seconds": 1}
        )
    assert forced.json()[str(GROUP)]["retry_after"] == 13
    assert refused.status_code == 429
    assert refused.json()["parameters"] == {"retry_after": 13}
    assert other.status_code == 200
    assert bad.status_code == 400
    assert [d.chat_id for d in telegram.deliveries] == [OTHER]
