"""The ``khronos`` command line: a thin client of the control socket.

This package is the only one that imports typer and rich, and only when a command needs them:
``main()`` first tries the standard-library fast path for machine reads (``fast.py``). It never
imports the runtime, pybreaker, pyrate_limiter or redis (a test holds this).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # the CLI's fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    from khronos_cli.cli.fast import run

    code = run(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from khronos_cli.cli.app import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from khronos_cli.cli.app import app

        return app
    raise AttributeError(name)
