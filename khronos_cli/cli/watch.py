"""Live views: redraw in place about once per interval until Ctrl-C (exit 0).

When stdout is not a terminal, or with ``--json``, each interval prints one plain snapshot (or one
NDJSON line) instead of redrawing, so ``watch`` output can be piped and logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import RenderableType
from rich.live import Live

from khronos_cli.cli import output
from khronos_cli.cli.options import MAX_INTERVAL, number


def watch(
    fetch: Callable[[], Any],
    render: Callable[[Any], RenderableType],
    *,
    interval: float,
    as_json: bool,
) -> None:
    """Poll ``fetch`` every ``interval`` seconds and show it until interrupted."""
    interval = number(interval, "--interval", least=0.1, most=MAX_INTERVAL)
    live = not as_json and output.stdout.is_terminal
    try:
        if live:
            with Live(render(fetch()), console=output.stdout, auto_refresh=False) as view:
                while True:
                    time.sleep(interval)
                    view.update(render(fetch()), refresh=True)
        while True:
            data = fetch()
            if as_json:
                output.print_json(data)
            else:
                output.stdout.print(render(data))
            time.sleep(interval)
    except KeyboardInterrupt:
        return
