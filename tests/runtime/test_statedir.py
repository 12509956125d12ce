"""The state directory's files: private, never written or read through a symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from khronos_cli import statedir
from khronos_cli.errors import StateDirError


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


def test_prepare_creates_or_tightens_a_directory_of_ours_but_never_through_a_link(
    tmp_path: Path,
) -> None:
    """A missing directory is created 0700, a readable one of ours tightened to 0700; a symlink
    of ours to a directory of ours is accepted as it is (no chmod through the link)."""
    created = statedir.prepare(tmp_path / "new" / "state")
    assert _mode(created) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    statedir.prepare(loose)
    assert _mode(loose) == 0o700
    target = tmp_path / "target"
    target.mkdir()
    os.chmod(target, 0o755)
    link = tmp_path / "link"
    link.symlink_to(target)
    statedir.prepare(link)
    assert _mode(target) == 0o755


def test_files_are_0600_and_never_followed_through_a_symlink(tmp_path: Path) -> None:
    """write_private replaces a planted link (its target untouched), append_private refuses one,
    read_json ignores one; files are created 0600 and a looser file of ours is tightened."""
    state = statedir.prepare(tmp_path / "state")
    target = tmp_path / "target"
    target.write_text("keep")
    (state / "run.json").symlink_to(target)
    statedir.write_private(state / "run.json", '{"pid": 1}')
    assert target.read_text() == "keep" and not (state / "run.json").is_symlink()
    assert _mode(state / "run.json") == 0o600
    (state / "khronos.log").symlink_to(target)
    with pytest.raises(StateDirError, match="symlink"):
        statedir.append_private(state / "khronos.log")
    assert statedir.read_json(state / "khronos.log") is None
    assert target.read_text() == "keep"
    old = state / "supervisor.json"
    old.write_text("{}")
    os.chmod(old, 0o644)
    statedir.append_private(old).close()
    assert _mode(old) == 0o600
    assert statedir.read_json(state / "run.json") == {"pid": 1}


def test_a_file_of_another_uid_in_the_directory_is_refused(tmp_path: Path) -> None:
    """Something another user left in the state directory is a reason to refuse it (exit 78)."""
    if os.getuid() != 0:
        pytest.skip("needs root to make a file owned by another uid")
    state = statedir.prepare(tmp_path / "state")
    left = state / "khronos.db"
    left.write_text("")
    os.chown(left, 65534, 65534)
    with pytest.raises(StateDirError, match="belongs to uid 65534") as caught:
        statedir.prepare(state)
    assert caught.value.exit_code == 78
