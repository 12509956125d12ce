"""Fixtures of the bot tests: a real SQLite file, opened and closed around each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from khronos_cli.bot.store import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database file lives (its directory is created by the store)."""
    return tmp_path / "state" / "khronos.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    """An open store on a fresh file."""
    opened = await Store.open(db_path)
    try:
        yield opened
    finally:
        await opened.aclose()
