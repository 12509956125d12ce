"""One alert straight through the Bot API, for the supervisor: standard library only.

While the worker crash-loops there is no outbox to record an alert in, nor a limiter to pace
it: the supervisor sends **one** message per crash loop (when it enters the state), to each
operator chat and the webhook, each with a short timeout, and carries on. What Telegram did not
take is said again by the next worker that starts (``runtime/alerting.previous_run``).
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from khronos_cli.redaction import Scrubber
from khronos_cli.settings import Settings

__all__ = ["HEADER", "TIMEOUT", "crashloop_text", "label", "tell"]

TIMEOUT = 3.0  # per request; the whole call gives up after twice that
HEADER = "⚠ khronos {label}\n"  # every alert message's first line, the worker's and ours


def label(settings: Settings) -> str:
    """Which bot on which machine is speaking: ``host · bot 123456``."""
    return f"{socket.gethostname()} · bot {settings.bot_id}"


def crashloop_text(state: dict[str, Any], last_line: str, delay: float) -> str:
    """The crash loop, from the supervisor's ``state``: how many failures, the last exit, the
    next try, and the worker's last line."""
    last = state.get("last_exit") or {}
    signum = last.get("signal")
    said = f"signal {signal.Signals(signum).name}" if signum else f"code {last.get('code')}"
    return (
        f"the worker is crash-looping: {state.get('failures')} fast failures in a row, "
        f"the last with {said} after {last.get('uptime_s')} s; next try in {delay:.0f} s"
        + (f"\nlast line: {last_line[:300]}" if last_line else "")
    )


def tell(
    settings: Settings, text: str, *, kind: str = "crashloop", timeout: float = TIMEOUT
) -> dict[str, str]:
    """Send ``text`` (one alert of ``kind``) to every ``[alerts]`` chat and the webhook; what
    happened to each (``sent``, or the scrubbed error), keyed by chat id or ``webhook``."""
    alerts, scrub = settings.alerts, Scrubber(settings.secrets)
    token = settings.telegram_token.reveal()
    deadline = time.monotonic() + 2 * timeout
    results: dict[str, str] = {}
    targets: list[tuple[str, str, dict[str, Any]]] = [
        (str(chat), f"{settings.telegram_base_url}/bot{token}/sendMessage", {"chat_id": chat})
        for chat in alerts.chat_ids
    ]
    if alerts.webhook_url:
        event = {"subject": kind, "kind": kind, "count": 1, "at": round(time.time(), 3)}
        body = {"bot": label(settings), "alerts": [event]}
        targets.append(("webhook", alerts.webhook_url.reveal(), body))
    message = HEADER.format(label=label(settings)) + "• " + text
    for name, url, body in targets:
        left = deadline - time.monotonic()
        if left <= 0:
            results[name] = "skipped: out of time"
            continue
        request = urllib.request.Request(
            url,
            data=json.dumps({**body, "text": message}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=min(timeout, left)) as answer:
                answer.read(65536)
            results[name] = "sent"
        except (OSError, ValueError, urllib.error.URLError) as exc:
            results[name] = scrub(f"{type(exc).__name__}: {exc}")[:200]
    return results
