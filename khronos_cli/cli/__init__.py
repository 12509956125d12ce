"""The ``khronos`` command line: a thin client of the control socket.

This package is the only one that imports typer and rich. It must not import the runtime,
pybreaker, pyrate_limiter or redis: every CLI call would pay for them (a test holds this).
"""

from khronos_cli.cli.app import app, main

__all__ = ["app", "main"]
