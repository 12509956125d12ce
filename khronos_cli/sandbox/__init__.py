"""Loopback stand-ins for everything the bot talks to, plus simulated users.

``khronos run --sandbox`` and the tests run the real bot against these instead of the internet:

- :class:`TelegramStandIn` (:mod:`.telegram`): the Bot API with real offset, long-poll, 409,
  flood-control (:mod:`.flood`), webhook (:mod:`.webhook`) and refusal (blocked users, upgraded
  groups, files over 20 MB) semantics; the world around the bot — chats, service messages, edits,
  callback queries, entities — in :mod:`.chats`, :mod:`.service`, :mod:`.entities`,
  :mod:`.files`; an admin API under ``/_sandbox/`` (:mod:`.telegram_admin`);
- :class:`AnthropicStandIn` and :class:`OpenAIStandIn` (:mod:`.anthropic_api`,
  :mod:`.openai_api`, modes and latency in :mod:`.llm`): real shapes, deterministic replies, the
  other shapes real answers take on a directive word (:mod:`.replies`), fault modes;
- :class:`SimulatedUsers` (:mod:`.users`) pushing messages at a rate — plain, or the mix of
  :mod:`.traffic` — and the :class:`Ledger` (:mod:`.ledger`) that checks every message that
  deserves an answer got exactly one (in one part or several), and none that deserves none did;
- :class:`SandboxStack` (:mod:`.stack`): all three servers together.

Every server is aiohttp on 127.0.0.1, port 0 by default, run inside the caller's event loop:
``base_url = await server.start()`` ... ``await server.aclose()``, or ``async with``.
"""

from khronos_cli.sandbox._server import SandboxError
from khronos_cli.sandbox.anthropic_api import AnthropicStandIn
from khronos_cli.sandbox.flood import FloodLimits
from khronos_cli.sandbox.ledger import FALLBACK_TEXT, Ledger, LedgerReport
from khronos_cli.sandbox.llm import LLMMode
from khronos_cli.sandbox.openai_api import OpenAIStandIn
from khronos_cli.sandbox.records import Delivery, UserMessage
from khronos_cli.sandbox.stack import SandboxStack
from khronos_cli.sandbox.telegram import SANDBOX_TOKEN, TelegramStandIn
from khronos_cli.sandbox.users import SimulatedUsers

__all__ = [
    "FALLBACK_TEXT",
    "SANDBOX_TOKEN",
    "AnthropicStandIn",
    "Delivery",
    "FloodLimits",
    "LLMMode",
    "Ledger",
    "LedgerReport",
    "OpenAIStandIn",
    "SandboxError",
    "SandboxStack",
    "SimulatedUsers",
    "TelegramStandIn",
    "UserMessage",
]
