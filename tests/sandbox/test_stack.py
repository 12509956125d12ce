"""The whole sandbox together: start/stop, wiring for a bot process, and a full voice round trip."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from khronos_cli.config import Settings
from khronos_cli.sandbox import SANDBOX_TOKEN, SandboxStack


async def test_stack_starts_three_servers_and_stops_them() -> None:
    """SandboxStack serves Telegram, Anthropic and OpenAI on distinct ports and closes them all."""
    async with SandboxStack() as stack:
        urls = [stack.telegram_base_url, stack.anthropic_base_url, stack.openai_base_url]
        async with httpx.AsyncClient() as client:
            me = await client.get(f"{stack.telegram_base_url}/bot{stack.token}/getMe")
            anthropic = await client.get(f"{stack.anthropic_base_url}/_sandbox/stats")
            openai = await client.get(f"{stack.openai_base_url}/_sandbox/stats")
    assert len(set(urls)) == 3
    assert all(url.startswith("http://127.0.0.1:") for url in urls)
    assert me.json()["ok"] is True
    assert (anthropic.json()["provider"], openai.json()["provider"]) == ("anthropic", "openai")
    async with httpx.AsyncClient() as client:
        for url in urls:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)


async def test_env_and_config_point_a_bot_at_the_stand_ins() -> None:
    """env() holds the fake secrets and config_toml() the base URLs, for a bot subprocess."""
    async with SandboxStack() as stack:
        env = stack.env()
        toml = stack.config_toml()
        assert f'base_url = "{stack.telegram_base_url}"' in toml
        assert f'base_url = "{stack.anthropic_base_url}"' in toml
        assert f'base_url = "{stack.openai_base_url}"' in toml
    assert env["TELEGRAM_BOT_TOKEN"] == SANDBOX_TOKEN
    assert env["ANTHROPIC_API_KEY"] == stack.anthropic_api_key
    assert env["OPENAI_API_KEY"] == stack.openai_api_key


async def test_configure_points_settings_at_the_stand_ins(tmp_path: Path) -> None:
    """configure(settings) swaps in the stand-ins' base URLs and the fake secrets."""
    async with SandboxStack() as stack:
        settings = stack.configure(Settings(state_dir=tmp_path))
        assert settings.telegram_base_url == stack.telegram_base_url
        assert settings.anthropic_base_url == stack.anthropic_base_url
        assert settings.openai_base_url == stack.openai_base_url
    assert settings.telegram_token.reveal() == SANDBOX_TOKEN
    assert settings.anthropic_api_key.reveal() == stack.anthropic_api_key
    assert settings.openai_api_key.reveal() == stack.openai_api_key
    assert settings.state_dir == tmp_path


async def test_stack_keys_are_checked() -> None:
    """The stack's LLM stand-ins accept the stack's keys and refuse others."""
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    async with SandboxStack() as stack, httpx.AsyncClient() as client:
        url = f"{stack.anthropic_base_url}/v1/messages"
        good = await client.post(
            url,
            json=body,
            headers={"x-api-key": stack.anthropic_api_key, "anthropic-version": "2023-06-01"},
        )
        bad = await client.post(
            url, json=body, headers={"x-api-key": "stolen", "anthropic-version": "2023-06-01"}
        )
    assert (good.status_code, bad.status_code) == (200, 401)


async def test_voice_round_trip() -> None:
    """getUpdates -> getFile -> file download -> transcription gives back the pushed transcript."""
    async with SandboxStack() as stack, httpx.AsyncClient() as client:
        api = f"{stack.telegram_base_url}/bot{stack.token}"
        stack.telegram.push_voice(42, 42, "lembrete: reunião às três")
        (update,) = (await client.get(f"{api}/getUpdates")).json()["result"]
        file_id = update["message"]["voice"]["file_id"]
        file = (await client.get(f"{api}/getFile", params={"file_id": file_id})).json()["result"]
        audio = await client.get(
            f"{stack.telegram_base_url}/file/bot{stack.token}/{file['file_path']}"
        )
        transcription = await client.post(
            f"{stack.openai_base_url}/v1/audio/transcriptions",
            headers={"authorization": f"Bearer {stack.openai_api_key}"},
            data={"model": "whisper-1"},
            files={"file": ("voice.oga", audio.content, "audio/ogg")},
        )
        missing = await client.get(f"{api}/getFile", params={"file_id": "nope"})
    assert file["file_size"] == len(audio.content)
    assert transcription.json() == {"text": "lembrete: reunião às três"}
    assert missing.status_code == 400


async def test_users_from_the_stack_write_into_its_telegram() -> None:
    """stack.users(...) builds simulated users bound to the stack's Telegram stand-in."""
    async with SandboxStack() as stack:
        users = stack.users(rate=1000, count=4, voice_share=0)
        report = await users.run()
        await users.aclose()
    assert report.sent == 4
    assert stack.telegram.pending_update_count == 4


async def test_a_failed_start_closes_what_started() -> None:
    """If one stand-in cannot bind, the others are stopped and the error propagates."""
    async with SandboxStack() as running:
        stack = SandboxStack()
        stack.openai.port = running.openai.port  # taken
        with pytest.raises(Exception, match="address in use"):
            await stack.start()
        assert not stack.telegram.started
        assert not stack.anthropic.started
