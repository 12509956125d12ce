"""run.log's rotating writer: whole lines, bounded files, a fixed number kept."""

from __future__ import annotations

from pathlib import Path

from khronos_cli.runtime.runlog import RotatingWriter


def test_files_stay_under_the_size_and_only_backups_are_kept(tmp_path: Path) -> None:
    """Lines written in chunks of any size land in files of at most max_bytes, cut between
    lines, with `backups` old files kept and nothing lost from the newest ones."""
    path = tmp_path / "run.log"
    writer = RotatingWriter(path, max_bytes=100, backups=2)
    lines = [f"line {i:03d} {'x' * (i % 7)}\n".encode() for i in range(60)]
    for start in range(0, len(lines), 5):
        writer.write(b"".join(lines[start : start + 5]))
    writer.close()
    files = [tmp_path / "run.log.2", tmp_path / "run.log.1", path]
    assert not (tmp_path / "run.log.3").exists()
    for file in files:
        assert 0 < file.stat().st_size <= 100 and file.read_bytes().endswith(b"\n"), file
    kept = b"".join(file.read_bytes() for file in files)
    assert b"".join(lines).endswith(kept)


def test_a_line_longer_than_a_file_gets_a_file_of_its_own(tmp_path: Path) -> None:
    """A single line over max_bytes is written whole, alone, between rotations."""
    path = tmp_path / "run.log"
    writer = RotatingWriter(path, max_bytes=10, backups=3)
    writer.write(b"short\n" + b"y" * 25 + b"\nend\n")
    writer.close()
    assert (tmp_path / "run.log.2").read_bytes() == b"short\n"
    assert (tmp_path / "run.log.1").read_bytes() == b"y" * 25 + b"\n"
    assert path.read_bytes() == b"end\n"
