"""A small bot that follows the ledger's rules, for the tests of the users' mix.

It is written from the Bot API's wire format, not from the sandbox's code: it reads entities by
UTF-16 offsets, answers only what is addressed to it, splits answers at 4,096 code points (first
part a reply, the rest plain), drops what a blocked user cannot get, and resends to the supergroup
a migrated group became. ``naive=True`` makes it the bot of today: it answers every message, in one
part, to the chat it came from.
"""

from __future__ import annotations

from typing import Any

import httpx

from khronos_cli.sandbox import SANDBOX_TOKEN

LIMIT = 4096


async def run(base_url: str, *, naive: bool = False) -> None:
    """Long-poll and answer until cancelled."""
    async with (
        httpx.AsyncClient(base_url=f"{base_url}/bot{SANDBOX_TOKEN}", timeout=10) as api,
        httpx.AsyncClient(base_url=f"{base_url}/file/bot{SANDBOX_TOKEN}", timeout=10) as files,
    ):
        me = (await api.get("/getMe")).json()["result"]
        offset = 0
        while True:
            polled = await api.post("/getUpdates", json={"offset": offset, "timeout": 5})
            for update in polled.json()["result"]:
                offset = update["update_id"] + 1
                message = update.get("message")
                if message is None or not (naive or _addressed(message, me)):
                    continue
                answer = await _answer(api, files, message)
                if answer is not None:
                    await _deliver(api, message, answer, split=not naive)


def _piece(text: str, entity: dict[str, Any]) -> str:
    units = text.encode("utf-16-le")
    start = entity["offset"] * 2
    return units[start : start + entity["length"] * 2].decode("utf-16-le")


def _addressed(message: dict[str, Any], me: dict[str, Any]) -> bool:
    if not {"text", "voice", "sticker"} & message.keys():
        return False  # a service message
    if message["chat"]["type"] == "private":
        return True
    text = message.get("text") or message.get("caption") or ""
    for entity in message.get("entities") or message.get("caption_entities") or []:
        piece = _piece(text, entity)
        if entity["type"] == "bot_command" and entity["offset"] == 0:
            _, _, target = piece.partition("@")
            return target in ("", me["username"])
        if entity["type"] == "mention" and piece[1:].lower() == me["username"].lower():
            return True
    return (message.get("reply_to_message") or {}).get("from", {}).get("id") == me["id"]


async def _answer(
    api: httpx.AsyncClient, files: httpx.AsyncClient, message: dict[str, Any]
) -> str | None:
    if "text" in message:
        return f"reference echo: {message['text']}"
    if "voice" not in message:
        return "I can read text and voice notes."
    meta = await api.post("/getFile", json={"file_id": message["voice"]["file_id"]})
    if meta.status_code != 200:
        return f"I cannot fetch that voice note: {meta.json()['description']}"
    audio = (await files.get(f"/{meta.json()['result']['file_path']}")).content
    heard = audio.split(b"\n", 1)[-1].decode("utf-8")
    return f"voice: {heard}" if heard else "I heard nothing in that voice note."


async def _deliver(
    api: httpx.AsyncClient, message: dict[str, Any], answer: str, *, split: bool
) -> None:
    chat_id = message["chat"]["id"]
    parts = [answer[i : i + LIMIT] for i in range(0, len(answer), LIMIT)] if split else [answer]
    for number, part in enumerate(parts):
        params: dict[str, Any] = {"chat_id": chat_id, "text": part}
        if number == 0:
            params["reply_parameters"] = {
                "message_id": message["message_id"],
                "allow_sending_without_reply": True,
            }
        sent = await api.post("/sendMessage", json=params)
        moved = sent.json().get("parameters", {}).get("migrate_to_chat_id")
        if moved is not None and split:
            chat_id = params["chat_id"] = moved
            sent = await api.post("/sendMessage", json=params)
        if sent.status_code != 200:
            return  # blocked, too long (naive), ...: nothing more to send
