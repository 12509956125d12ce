"""The fast path for machine reads: ``khronos status|breakers|limiter|outage list --json``.

Typer builds pydantic adapters on every run (~70 ms here) and rich costs its import too, so a
monitoring script calling ``khronos breakers --json --check`` every few seconds would pay for a
UI it never shows. This module recognises exactly those forms (plus ``--state-dir``) with the
standard library, asks the control socket, and prints the same bytes the full CLI prints, with
the same exit codes. Anything else — help, another option, a typo — returns None and goes to the
Typer app, which explains itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["run"]

_READS = {
    ("status",): None,
    ("breakers",): "/breakers",
    ("limiter",): "/limiters",
    ("outage", "list"): "/outages",
}


def _parse(argv: list[str]) -> tuple[tuple[str, ...], Path | None, bool] | None:
    words: list[str] = []
    state_dir: str | None = None
    seen_json = check = False
    tokens = iter(argv)
    for token in tokens:
        if token == "--json":
            seen_json = True
        elif token == "--check":
            check = True
        elif token == "--state-dir":
            state_dir = next(tokens, None)
            if state_dir is None:
                return None
        elif token.startswith("--state-dir="):
            state_dir = token.split("=", 1)[1]
        elif token.startswith("-"):
            return None
        else:
            words.append(token)
    command = tuple(words)
    if not seen_json or command not in _READS or (check and command != ("breakers",)):
        return None
    return command, Path(state_dir) if state_dir else None, check


def run(argv: list[str]) -> int | None:
    """The exit code when ``argv`` is a fast read; None to use the full CLI."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    command, state_dir, check = parsed
    from khronos_cli.config import default_state_dir
    from khronos_cli.control.client import ControlClient
    from khronos_cli.control.protocol import encode_document
    from khronos_cli.control.state import gather
    from khronos_cli.errors import KhronosError

    directory = (state_dir or default_state_dir()).expanduser()
    try:
        if command == ("status",):
            data = gather(directory)
        else:
            with ControlClient(directory) as control:
                data = control.get(_READS[command] or "")
    except KhronosError as exc:
        if os.environ.get("KHRONOS_DEBUG") == "1":
            raise
        sys.stderr.write(f"error: {exc}\n")
        return int(exc.exit_code)
    sys.stdout.write(encode_document(data))
    sys.stdout.flush()
    if check and any(item.get("state") == "open" for item in data.values()):
        return 1
    return 0
