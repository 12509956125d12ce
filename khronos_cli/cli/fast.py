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

TYPE_CHECKING = False  # the fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["READS", "Read", "run"]

# The forms taken here, with the options each accepts: a test holds this table to the Typer
# tree, so a renamed command or option cannot leave the fast path answering what Typer would not.
READS: dict[tuple[str, ...], frozenset[str]] = {
    ("status",): frozenset({"--json", "--state-dir", "--all"}),
    ("breakers",): frozenset({"--json", "--state-dir", "--all", "--check"}),
    ("limiter",): frozenset({"--json", "--state-dir", "--all"}),
    ("outage", "list"): frozenset({"--json", "--state-dir"}),
    ("config",): frozenset({"--json", "--state-dir", "--config", "--sandbox"}),
}


class Read:
    """A fast read: the command's words and the options given."""

    __slots__ = ("check", "command", "config", "every", "human", "sandbox", "state_dir")

    def __init__(
        self,
        command: tuple[str, ...],
        state_dir: Path | None,
        check: bool = False,
        every: bool = False,
        human: bool = False,
        config: Path | None = None,
        sandbox: bool = False,
    ) -> None:
        self.command, self.state_dir, self.config = command, state_dir, config
        self.check, self.every, self.human, self.sandbox = check, every, human, sandbox

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Read) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Read{self._fields()!r}"


_FLAGS = ("--json", "--check", "--all", "--sandbox")
_VALUES = ("--state-dir", "--config")


def _parse(argv: list[str]) -> Read | None:
    words: list[str] = []
    flags: set[str] = set()
    values: dict[str, str] = {}
    tokens = iter(argv)
    for token in tokens:
        name, equals, value = token.partition("=")
        if token in _FLAGS:
            flags.add(token)
        elif name in _VALUES:
            given = value if equals else next(tokens, None)
            if not given:
                return None
            values[name] = given
        elif token.startswith("-"):
            return None
        else:
            words.append(token)
    command = tuple(words)
    accepted = READS.get(command)
    if accepted is None or not (flags | set(values)) - {"--json"} <= accepted:
        return None
    state_dir, config = values.get("--state-dir"), values.get("--config")
    return Read(
        command,
        Path(state_dir) if state_dir else None,
        "--check" in flags,
        "--all" in flags,
        "--json" not in flags,
        Path(config) if config else None,
        "--sandbox" in flags,
    )


def run(argv: list[str]) -> int | None:
    """The exit code when ``argv`` is a fast read; None to use the full CLI."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    if parsed.command == ("config",):  # settings read here: no control socket, no http.client
        return _config(parsed)
    _http_client_without_tls()
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


def _http_client_without_tls() -> None:
    """Import ``http.client`` without ``ssl``: it loads ssl (and OpenSSL) only to define
    ``HTTPSConnection``, which a Unix socket never needs, at about a tenth of a ``--json``
    read's CPU. Only this process's fast reads, which do nothing else, import it so."""
    if "http.client" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # "import ssl" now raises ImportError
    try:
        import http.client  # noqa: F401
    finally:
        del sys.modules["ssl"]


def _config(parsed: Read) -> int:
    """``khronos config``: what the Typer command prints, the same way."""
    from khronos_cli.cli import settings_view
    from khronos_cli.errors import KhronosError

    try:
        settings_view.check(
            parsed.config, parsed.state_dir, as_json=not parsed.human, sandbox=parsed.sandbox
        )
    except KhronosError as exc:
        return _fail(exc)
    return 0


def _show(command: tuple[str, ...], data: Any, every: bool) -> None:
    """The tables the Typer commands draw (the same views), without Typer, and without rich
    when stdout is not a terminal."""
    from khronos_cli.cli import plain, replicas, views

    draw: Callable[[Any], Any]
    if command == ("status",):
        draw = replicas.render_status if every else views.status
    elif command == ("breakers",):
        draw = views.breakers_all if every else views.breakers
    elif command == ("limiter",):
        draw = views.limiters_all if every else views.limiters
    elif not data:
        sys.stderr.write("no outage is active\n")  # as the Typer command prints it
        return
    else:
        draw = views.outages
    plain.show(draw(data))


def _fail(exc: Exception) -> int:
    from khronos_cli.errors import KhronosError

    if os.environ.get("KHRONOS_DEBUG") == "1" or not isinstance(exc, KhronosError):
        raise exc
    sys.stderr.write(f"error: {exc}\n")
    return int(exc.exit_code)
