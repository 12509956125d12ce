"""The fast path for the reads: ``khronos status|breakers|limiter|outage list [--json]``.

Typer builds pydantic adapters on every run (~100 ms here), so the commands an operator types
most would pay for a command tree they never use. This module recognises exactly those forms
(plus ``--state-dir``, ``--all`` for status, breakers and limiter, and ``--check`` for breakers)
with the standard library, asks :mod:`.reads` for the data the full CLI prints, and prints the
same bytes with the same exit codes: JSON with ``--json`` (no rich either), else the same views
(:mod:`.views`, rich). Anything else — help, another option, a typo — returns None and goes to
the Typer app, which explains itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["READS", "Read", "run"]

# The forms taken here, with the options each accepts: a test holds this table to the Typer
# tree, so a renamed command or option cannot leave the fast path answering what Typer would not.
READS: dict[tuple[str, ...], frozenset[str]] = {
    ("status",): frozenset({"--json", "--state-dir", "--all"}),
    ("breakers",): frozenset({"--json", "--state-dir", "--all", "--check"}),
    ("limiter",): frozenset({"--json", "--state-dir", "--all"}),
    ("outage", "list"): frozenset({"--json", "--state-dir"}),
}


class Read(NamedTuple):
    command: tuple[str, ...]
    state_dir: Path | None
    check: bool = False
    every: bool = False
    human: bool = False


def _parse(argv: list[str]) -> Read | None:
    words: list[str] = []
    state_dir: str | None = None
    seen_json = check = every = False
    tokens = iter(argv)
    for token in tokens:
        if token == "--json":
            seen_json = True
        elif token == "--check":
            check = True
        elif token == "--all":
            every = True
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
    accepted = READS.get(command)
    if accepted is None:
        return None
    if (check and "--check" not in accepted) or (every and "--all" not in accepted):
        return None
    return Read(command, Path(state_dir) if state_dir else None, check, every, not seen_json)


def run(argv: list[str]) -> int | None:
    """The exit code when ``argv`` is a fast read; None to use the full CLI."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    from khronos_cli.cli import reads
    from khronos_cli.control.protocol import encode_document
    from khronos_cli.errors import KhronosError, NotRunningError
    from khronos_cli.statedir import default_state_dir

    directory = (parsed.state_dir or default_state_dir()).expanduser()
    try:
        data = reads.read(directory, parsed.command, every=parsed.every)
    except KhronosError as exc:
        return _fail(exc)
    if parsed.human:
        _show(parsed.command, data, parsed.every)
    else:
        sys.stdout.write(encode_document(data))
        sys.stdout.flush()
    if parsed.command == ("status",) and reads.stopped(data):
        return _fail(NotRunningError(data["socket"]))
    if parsed.check and reads.any_open(data):
        return 1
    return 0


def _show(command: tuple[str, ...], data: Any, every: bool) -> None:
    """The tables the Typer commands draw (the same views), without Typer."""
    from khronos_cli.cli import output, replicas, views

    draw: Callable[[Any], Any]
    if command == ("status",):
        draw = replicas.render_status if every else views.status
    elif command == ("breakers",):
        draw = views.breakers_all if every else views.breakers
    elif command == ("limiter",):
        draw = views.limiters_all if every else views.limiters
    elif not data:
        output.stderr.print("no outage is active")
        return
    else:
        draw = views.outages
    output.show(draw(data))


def _fail(exc: Exception) -> int:
    from khronos_cli.errors import KhronosError

    if os.environ.get("KHRONOS_DEBUG") == "1" or not isinstance(exc, KhronosError):
        raise exc
    sys.stderr.write(f"error: {exc}\n")
    return int(exc.exit_code)
