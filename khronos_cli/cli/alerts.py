"""``khronos alerts test``: send one alert now to every operator chat and the webhook."""

from __future__ import annotations

from typing import Any

import typer

from khronos_cli.cli import output
from khronos_cli.cli.options import JSONOption, StateDirOption, resolve_state_dir
from khronos_cli.errors import ExitCode

app = typer.Typer(help="Alerts to the operator's Telegram chats and webhook.", no_args_is_help=True)

WAIT = 10.0  # the worker waits up to this for Telegram to accept; the socket a little longer


@app.command("test")
@output.command
def test(state_dir: StateDirOption = None, as_json: JSONOption = False) -> None:
    """Send a test alert to every [alerts] chat and the webhook now; say where it went
    (exit 1 when any did not take it)."""
    from khronos_cli.control.client import ControlClient

    with ControlClient(resolve_state_dir(state_dir), timeout=WAIT + 5) as control:
        result: dict[str, Any] = control.post("/alerts/test", {})
    if as_json:
        output.print_json(result)
    else:
        for chat in result["chats"]:
            where = f" (outbox {chat['outbox_id']})" if "outbox_id" in chat else ""
            why = f": {chat['why']}" if chat.get("why") else ""
            output.stdout.print(
                f"chat {chat['chat_id']}: {chat['state']}{where}{why}", markup=False
            )
        hook = result.get("webhook")
        if hook is not None:
            said = hook.get("why") or f"HTTP {hook.get('status')}"
            output.stdout.print(f"webhook: {hook['state']} ({said})", markup=False)
    missed = [c for c in result["chats"] if c["state"] != "sent"]
    if missed or (result.get("webhook") or {}).get("state") == "failed":
        raise typer.Exit(int(ExitCode.FAILURE))
