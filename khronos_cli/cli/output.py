"""The consoles: data goes to stdout, messages and progress to stderr (hatch's rule).

Both respect ``NO_COLOR``. Without a terminal, :func:`show` prints tables as full-width plain
columns (:mod:`.plain`), and messages on stderr are never folded at 80 columns: a command in a
message stays on one line. Untrusted text is always printed with ``markup=False``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from rich.console import Console

from khronos_cli.control.protocol import encode_document
from khronos_cli.errors import ExitCode, KhronosError


def _console(*, stderr: bool) -> Console:
    # soft_wrap: a message is one line however long; the terminal folds it, not rich.
    return Console(
        stderr=stderr, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True
    )


stdout = _console(stderr=False)
stderr = _console(stderr=True)


def show(view: Any) -> None:
    """Data on stdout: drawn for a terminal, full-width plain columns for anything else."""
    from khronos_cli.cli.plain import show

    show(view)


def print_json(data: Any) -> None:
    """One compact, stable JSON document on stdout."""
    sys.stdout.write(encode_document(data))
    sys.stdout.flush()


def fail(message: str, code: int = ExitCode.FAILURE) -> NoReturn:
    """Print one clear sentence on stderr and exit with ``code``."""
    import typer  # only a command fails this way; the fast path never loads Typer

    stderr.print(f"[bold red]error:[/] {_escape(message)}", soft_wrap=True)
    raise typer.Exit(int(code))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextmanager
def errors_to_exit_codes() -> Iterator[None]:
    """Turn KhronosError into its exit code and one line; ``KHRONOS_DEBUG=1`` re-raises."""
    try:
        yield
    except KhronosError as exc:
        if os.environ.get("KHRONOS_DEBUG") == "1":
            raise
        fail(str(exc), exc.exit_code)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command body so typed errors become exit codes, never tracebacks."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with errors_to_exit_codes():
            return fn(*args, **kwargs)

    return wrapper
