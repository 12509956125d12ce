"""``python -m khronos_cli.sandbox``: the stand-ins and simulated users as a process of their own.

``khronos run --sandbox`` starts this beside the supervisor, so the stand-ins (and the updates
Telegram still holds) outlive a worker crash and restart, as the real Telegram would. Once the
servers listen it writes ``<state-dir>/sandbox.json`` (pid, base URLs, the fake secrets as the
environment a worker needs, the admin URL) and logs, one plain line each, what the simulated users
say and what the bot answers. SIGTERM or SIGINT stops it; the file is removed on the way out.

The users' traffic is the *mix* by default (:mod:`khronos_cli.sandbox.traffic`): mostly plain
messages, plus long messages, ``#long``/``#blocks``/``#refuse``/``#empty`` requests, stickers, a
user who blocks the bot, big and empty voice notes, and in two groups commands, mentions, replies,
chatter, service messages, an edit, a callback query and a migration. ``--plain`` turns it off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from khronos_cli.sandbox.flood import FloodLimits
from khronos_cli.sandbox.stack import SandboxStack
from khronos_cli.sandbox.telegram import OPERATOR_CHAT, SANDBOX_TOKEN
from khronos_cli.statedir import SANDBOX_FILE, SANDBOX_IDS_FILE

_IDS_EVERY = 2.0  # seconds between saves of the next update id
_EPOCH = 1_700_000_000  # update ids never fall below 10 per second since then (a lost save)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m khronos_cli.sandbox", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--users", type=int, default=5, help="simulated users (0: none)")
    parser.add_argument("--rate", type=float, default=0.5, help="messages per second, all users")
    parser.add_argument("--voice-share", type=float, default=0.1)
    parser.add_argument("--groups", type=int, default=2, help="group chats (0: none)")
    parser.add_argument("--group-share", type=float, default=0.2, help="messages into groups")
    parser.add_argument("--plain", action="store_true", help="plain traffic only (no mix)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the users' choices")
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--duration", type=float, default=24 * 3600.0)
    parser.add_argument("--llm-latency", type=float, default=0.2, help="seconds per LLM answer")
    parser.add_argument(
        "--token-latency", type=float, default=0.0, help="LLM seconds per output token, added"
    )
    parser.add_argument(
        "--token", default=SANDBOX_TOKEN, help="the bot's token (another bot: another id)"
    )
    parser.add_argument(
        "--other-token",
        action="append",
        default=[],
        help="another bot on the same stand-in Telegram (repeatable)",
    )
    parser.add_argument("--no-flood-limits", action="store_true", help="benchmarks only")
    parser.add_argument("--quiet", action="store_true", help="do not log every message")
    return parser.parse_args(argv)


async def serve(options: argparse.Namespace) -> None:
    limits = FloodLimits.off() if options.no_flood_limits else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    state = options.state_dir / SANDBOX_FILE
    async with SandboxStack(
        token=options.token,
        other_tokens=options.other_token,
        flood_limits=limits,
        llm_latency=options.llm_latency,
        token_latency=options.token_latency,
    ) as stack:
        env = {
            **stack.env(),
            "KHRONOS_TELEGRAM_BASE_URL": stack.telegram_base_url,
            "KHRONOS_ANTHROPIC_BASE_URL": stack.anthropic_base_url,
            "KHRONOS_OPENAI_BASE_URL": stack.openai_base_url,
            "KHRONOS_ALERTS_CHAT_IDS": str(OPERATOR_CHAT),  # the operator chat hears the alerts
        }
        info = {
            "pid": os.getpid(),
            "telegram_base_url": stack.telegram_base_url,
            "anthropic_base_url": stack.anthropic_base_url,
            "openai_base_url": stack.openai_base_url,
            "admin_url": f"{stack.telegram_base_url}/_sandbox",
            "operator_chat": OPERATOR_CHAT,
            "env": env,
            "bots": {
                str(bot.bot_id): {
                    "env": {**env, "TELEGRAM_BOT_TOKEN": token},
                    "admin_url": f"{stack.telegram_base_url}/_sandbox/bot{bot.bot_id}",
                }
                for token, bot in stack.telegram.bots.items()
                if bot is not stack.telegram
            },
        }
        _write(state, info)
        ids = options.state_dir / SANDBOX_IDS_FILE
        stack.telegram.updates.continue_from(_first_update_id(ids))
        saver = asyncio.create_task(_save_ids(stack, ids), name="sandbox-ids")
        log = logging.getLogger("khronos.sandbox")
        users = None
        if options.users > 0:
            users = stack.users(
                users=options.users,
                rate=options.rate,
                voice_share=options.voice_share,
                groups=options.groups,
                group_share=options.group_share,
                mix=not options.plain,
                seed=options.seed,
                count=options.count,
                duration=options.duration,
                on_line=(lambda line: None) if options.quiet else log.info,
            )
            users.start()
        urls = (stack.telegram_base_url, stack.anthropic_base_url, stack.openai_base_url)
        log.info("sandbox ready: telegram %s, anthropic %s, openai %s", *urls)
        try:
            await stop.wait()
        finally:
            if users is not None:
                log.info("sandbox users: %s", users.report().summary())
                await users.aclose()
            saver.cancel()
            _write(ids, {"next_update_id": stack.telegram.updates.next_update_id})
            with contextlib.suppress(FileNotFoundError):
                state.unlink()


def _first_update_id(path: Path) -> int:
    """Where this run's update ids start: after the last run's (Telegram's go on growing, so a
    bot's journal never mistakes a new update for one it answered), and never below a floor that
    grows with the clock, for a run that ended without saving."""
    floor = max(1, (int(time.time()) - _EPOCH) * 10)
    try:
        saved = json.loads(path.read_text()).get("next_update_id")
    except (OSError, ValueError, AttributeError):
        saved = None
    return max(floor, saved) if isinstance(saved, int) else floor


async def _save_ids(stack: SandboxStack, path: Path) -> None:
    while True:
        await asyncio.sleep(_IDS_EVERY)
        _write(path, {"next_update_id": stack.telegram.updates.next_update_id})


def _write(path: Path, data: dict[str, object]) -> None:
    """``data`` as JSON at ``path``, 0600, replaced atomically."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    options = _arguments(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s sandbox %(message)s"
    )
    if os.environ.get("KHRONOS_LOG_FORMAT") == "json":  # `khronos run --sandbox`'s own format
        from khronos_cli.redaction import Scrubber
        from khronos_cli.runtime.logs import JSONFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JSONFormatter(Scrubber()))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    options.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    asyncio.run(serve(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
