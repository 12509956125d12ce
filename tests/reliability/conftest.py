"""Reliability scenarios: the figures each scenario records (helpers are in ``harness.py``).

One switch sets the size: ``KHRONOS_RELIABILITY=full`` runs the full scenarios (1,000 concurrent
``POST /chat``, 10,000 updates, long fuzz runs); without it (what ``make test`` runs) every
scenario runs in a short version. Scenarios *measure* and record their figures with the
``figures`` fixture; the figures are printed in pytest's terminal summary (whatever ``-s`` says)
and written as JSON to ``<pytest basetemp>/reliability-figures.json`` (and to
``$KHRONOS_RELIABILITY_OUT`` when set). ``RELIABILITY.md`` holds those of a full run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import FULL

_FIGURES: dict[str, dict[str, Any]] = {}
_BASETEMP: list[Path] = []


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., None]:
    """``figures(scenario, **values)`` records measured figures for the report."""
    base = tmp_path_factory.getbasetemp()
    if base not in _BASETEMP:
        _BASETEMP.append(base)

    def record(scenario: str, **values: Any) -> None:
        entry = _FIGURES.setdefault(scenario, {"test": request.node.nodeid})
        entry.update(values)
        entry["mode"] = "full" if FULL else "short"
        _write()

    return record


def _write() -> None:
    text = json.dumps(_FIGURES, indent=1, sort_keys=True, default=str)
    targets = [base / "reliability-figures.json" for base in _BASETEMP]
    if os.environ.get("KHRONOS_RELIABILITY_OUT"):
        targets.append(Path(os.environ["KHRONOS_RELIABILITY_OUT"]))
    for target in targets:
        target.write_text(text + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    mode = "full" if FULL else "short"
    terminalreporter.section(f"reliability figures ({mode})")
    for scenario, values in sorted(_FIGURES.items()):
        shown = {k: v for k, v in values.items() if k not in ("test", "mode")}
        terminalreporter.write_line(f"{scenario}: {json.dumps(shown, default=str)}")
    for base in _BASETEMP:
        terminalreporter.write_line(f"written to {base / 'reliability-figures.json'}")
