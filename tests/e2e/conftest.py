"""`khronos run --sandbox` as a real process tree on a temporary state dir, and ways to drive it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.instance import Instance


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    """A running `khronos run --sandbox` (no simulated users; tests push messages themselves)."""
    running = Instance(tmp_path).start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def make_instance(tmp_path: Path) -> Iterator[Any]:
    """A factory for instances with their own config or arguments, all closed at the end."""
    made: list[Instance] = []

    def make(name: str = "a", **options: Any) -> Instance:
        created = Instance(tmp_path / name, **options)
        made.append(created)
        return created

    yield make
    for created in made:
        created.close()
