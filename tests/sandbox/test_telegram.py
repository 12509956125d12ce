"""The Telegram stand-in over real HTTP: Bot API shapes, offsets, long polls, 409s, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from khronos_cli.sandbox import (
    SANDBOX_TOKEN,
    Delivery,
    FloodLimits,
    SandboxError,
    TelegramStandIn,
)
from tests.support import async_wait_for

CHAT = 1001


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandIn]:
    stand_in = TelegramStandIn(flood_limits=FloodLimits.off())
    stand_in.shutdown_timeout = 60  # closing must not rely on aiohttp cancelling handlers
    async with stand_in:
        yield stand_in


@pytest.fixture
async def client(telegram: TelegramStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{telegram.base_url}/bot{SANDBOX_TOKEN}") as http:
        yield http


async def updates(client: httpx.AsyncClient, **params: object) -> list[dict[str, object]]:
    response = await client.post("/getUpdates", json=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, object]] = response.json()["result"]
    return result


def ids(batch: list[dict[str, object]]) -> list[object]:
    return [update["update_id"] for update in batch]


async def test_get_me_answers_the_bot_api_envelope(client: httpx.AsyncClient) -> None:
    """getMe answers {"ok": true, "result": User} and method names are case-insensitive."""
    response = await client.get("/GETME")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["result"]["is_bot"] is True
    assert body["result"]["id"] == int(SANDBOX_TOKEN.split(":")[0])


async def test_wrong_token_is_401_and_unknown_method_404(telegram: TelegramStandIn) -> None:
    """A wrong token answers 401 Unauthorized and an unknown method 404 Not Found."""
    async with httpx.AsyncClient(base_url=telegram.base_url) as http:
        wrong = await http.get("/bot123:nope/getMe")
        unknown = await http.get(f"/bot{SANDBOX_TOKEN}/launchRocket")
    assert wrong.status_code == 401
    assert wrong.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert unknown.status_code == 404
    assert unknown.json()["description"] == "Not Found"


async def test_unconfirmed_updates_are_delivered_again(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """getUpdates without a higher offset returns the same updates again: nothing is forgotten."""
    for text in ("a", "b", "c"):
        telegram.push_text(CHAT, CHAT, text)
    first = await updates(client)
    again = await updates(client)
    assert ids(first) == ids(again) == [1, 2, 3]
    assert [u["message"]["text"] for u in first] == ["a", "b", "c"]  # type: ignore[index]
    assert telegram.pending_update_count == 3


async def test_offset_confirms_every_update_below_it(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """Calling getUpdates with offset N forgets updates below N; N+1 past the last forgets all."""
    for text in ("a", "b", "c"):
        telegram.push_text(CHAT, CHAT, text)
    assert ids(await updates(client, offset=2)) == [2, 3]
    assert telegram.pending_update_count == 2
    assert ids(await updates(client, offset=1)) == [2, 3]  # forgotten updates never come back
    assert await updates(client, offset=4) == []
    assert telegram.pending_update_count == 0


async def test_limit_and_query_string_params(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """limit caps the batch, and parameters work from a GET query string too."""
    for text in ("a", "b", "c"):
        telegram.push_text(CHAT, CHAT, text)
    response = await client.get("/getUpdates", params={"offset": "2", "limit": "1"})
    assert ids(response.json()["result"]) == [2]


async def test_negative_offset_keeps_only_the_last_updates(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A negative offset -N keeps the last N updates and forgets the earlier ones."""
    for text in ("a", "b", "c"):
        telegram.push_text(CHAT, CHAT, text)
    assert ids(await updates(client, offset=-1)) == [3]
    assert telegram.pending_update_count == 1


async def test_allowed_updates_filters_kinds(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """With allowed_updates=["message"], an edited_message update is never delivered."""
    telegram.push_update({"edited_message": {"message_id": 9, "text": "x"}})
    telegram.push_text(CHAT, CHAT, "kept")
    batch = await updates(client, allowed_updates=["message"])
    assert [list(u) for u in batch] == [["message", "update_id"]]


async def test_long_poll_wakes_on_a_new_update(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A pending long poll answers as soon as an update is pushed, not at its timeout."""
    poll = asyncio.create_task(client.post("/getUpdates", json={"timeout": 30}, timeout=5))
    await async_wait_for(lambda: telegram.requests["getupdates"] == 1)
    telegram.push_text(CHAT, CHAT, "wake up")
    response = await poll  # the client's 5 s timeout fails the test if the poll slept on
    assert [u["message"]["text"] for u in response.json()["result"]] == ["wake up"]


async def test_long_poll_returns_empty_at_its_timeout(client: httpx.AsyncClient) -> None:
    """A long poll with nothing to deliver answers an empty list when its timeout passes."""
    assert await updates(client, timeout=1) == []


async def test_second_poller_terminates_the_pending_one_with_409(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A second getUpdates while one is pending makes the pending one answer 409 Conflict."""
    first = asyncio.create_task(client.post("/getUpdates", json={"timeout": 30}, timeout=5))
    await async_wait_for(lambda: telegram.requests["getupdates"] == 1)
    second = await client.post("/getUpdates", json={"timeout": 0})
    conflict = await first
    assert second.status_code == 200
    assert conflict.status_code == 409
    assert conflict.json()["description"].startswith(
        "Conflict: terminated by other getUpdates request"
    )


async def test_send_message_records_the_delivery(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """sendMessage records chat, text, replied-to id and parse mode, and answers a Message."""
    asked = telegram.push_text(CHAT, CHAT, "hello?")
    response = await client.post(
        "/sendMessage",
        json={
            "chat_id": CHAT,
            "text": "hi!",
            "reply_parameters": {"message_id": asked},
            "parse_mode": "HTML",
        },
    )
    message = response.json()["result"]
    assert message["chat"] == {"id": CHAT, "type": "private", "first_name": f"User {CHAT}"}
    assert message["reply_to_message"]["text"] == "hello?"
    (delivery,) = telegram.deliveries
    assert (delivery.chat_id, delivery.text, delivery.reply_to_message_id) == (CHAT, "hi!", asked)
    assert delivery.parse_mode == "HTML"
    assert delivery.message_id == message["message_id"]


async def test_send_message_accepts_form_bodies(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A form-encoded sendMessage with reply_to_message_id is recorded like a JSON one."""
    asked = telegram.push_text(-100, 7, "/start@khronos_sandbox_bot")
    response = await client.post(
        "/sendMessage",
        data={"chat_id": "-100", "text": "grupo", "reply_to_message_id": str(asked)},
    )
    assert response.json()["result"]["chat"]["type"] == "group"
    assert telegram.deliveries[0].reply_to_message_id == asked


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"text": "x"}, "Bad Request: chat_id is empty"),
        ({"chat_id": CHAT, "text": " "}, "Bad Request: message text is empty"),
        ({"chat_id": CHAT, "text": "x" * 4097}, "Bad Request: message is too long"),
        ({"chat_id": "abc", "text": "x"}, "Bad Request: wrong parameter chat_id"),
    ],
)
async def test_send_message_rejects_bad_requests(
    telegram: TelegramStandIn,
    client: httpx.AsyncClient,
    params: dict[str, object],
    description: str,
) -> None:
    """Bad sendMessage parameters answer 400 with Telegram's description and record nothing."""
    response = await client.post("/sendMessage", json=params)
    assert response.status_code == 400
    assert response.json()["description"] == description
    assert telegram.deliveries == []


async def test_listeners_see_every_delivery(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """add_listener's callback gets each delivery; after remove_listener it gets none."""
    seen: list[str] = []

    def listener(delivery: Delivery) -> None:
        seen.append(delivery.text)

    telegram.add_listener(listener)
    await client.post("/sendMessage", json={"chat_id": CHAT, "text": "one"})
    telegram.remove_listener(listener)
    await client.post("/sendMessage", json={"chat_id": CHAT, "text": "two"})
    assert seen == ["one"]


async def test_injected_errors_hit_only_the_chosen_methods(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """An "errors" failure on sendMessage answers 502 there, spares getMe, ends after count."""
    telegram.set_failure("errors", methods=["sendMessage"], count=1)
    failed = await client.post("/sendMessage", json={"chat_id": CHAT, "text": "x"})
    me = await client.get("/getMe")
    healed = await client.post("/sendMessage", json={"chat_id": CHAT, "text": "y"})
    assert failed.status_code == 502
    assert failed.json() == {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    assert me.status_code == 200
    assert healed.status_code == 200
    assert [d.text for d in telegram.deliveries] == ["y"]


async def test_injected_down_drops_the_connection(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A "down" failure closes the connection without an answer."""
    telegram.set_failure("down")
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/getMe")


async def test_injected_hang_never_answers_and_close_is_prompt(
    telegram: TelegramStandIn, client: httpx.AsyncClient
) -> None:
    """A "hang" failure leaves the client to time out; the stand-in still closes at once."""
    telegram.set_failure("hang")
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/getMe", timeout=0.1)
    hung = asyncio.create_task(client.get("/getMe", timeout=5))
    await async_wait_for(lambda: telegram.requests["getme"] == 2)
    await asyncio.wait_for(telegram.aclose(), timeout=5)  # far below its shutdown_timeout
    with pytest.raises(httpx.TransportError):
        await hung


async def test_set_failure_refuses_unknown_modes(telegram: TelegramStandIn) -> None:
    """set_failure names the modes it knows when given another."""
    with pytest.raises(ValueError, match="expected ok, errors, hang or down"):
        telegram.set_failure("flaky")  # type: ignore[arg-type]


async def test_busy_port_raises_a_sandbox_error(telegram: TelegramStandIn) -> None:
    """Starting on a port in use raises SandboxError naming the address."""
    other = TelegramStandIn(port=telegram.port)
    with pytest.raises(SandboxError, match="address in use"):
        await other.start()
    assert not other.started


async def test_base_url_before_start_raises() -> None:
    """base_url of a stand-in that was never started is a SandboxError, not a bogus URL."""
    with pytest.raises(SandboxError, match="not started"):
        _ = TelegramStandIn().base_url


async def test_two_tokens_are_two_bots_on_one_port() -> None:
    """Another token added before start is a bot of its own on the same port: its own getMe,
    updates, deliveries and admin API (/_sandbox/bot<id>/); a token never added is 401; adding
    one after start is refused."""
    other = "7000000002:OTHERotherOTHERotherOTHERotherOTHER"
    stand_in = TelegramStandIn(flood_limits=FloodLimits.off())
    second = stand_in.add_bot(other)
    async with stand_in, httpx.AsyncClient(base_url=stand_in.base_url) as http:
        me = (await http.get(f"/bot{other}/getMe")).json()["result"]
        assert me["id"] == 7000000002
        pushed = await http.post(
            "/_sandbox/bot7000000002/messages", json={"chat_id": CHAT, "text": "hi"}
        )
        assert pushed.status_code == 200
        mine = (await http.post(f"/bot{other}/getUpdates", json={})).json()["result"]
        theirs = (await http.post(f"/bot{SANDBOX_TOKEN}/getUpdates", json={})).json()["result"]
        assert len(mine) == 1 and theirs == [] and len(second.pushed) == 1
        sent = {"chat_id": CHAT, "text": "hello"}
        assert (await http.post(f"/bot{other}/sendMessage", json=sent)).status_code == 200
        assert len(second.deliveries) == 1 and stand_in.deliveries == []
        assert (await http.get("/bot7000000003:NOPEnopeNOPEnopeNOPE/getMe")).status_code == 401
        with pytest.raises(SandboxError):
            stand_in.add_bot("7000000004:LATElateLATElateLATElateLATE")
