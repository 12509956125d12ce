"""``khronos backup`` and ``khronos restore`` through a real worker: a copy taken while it runs,
restore refused while it runs or for a damaged copy, a copy killed midway, scheduled rotation and
a scheduled copy that fails."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from khronos_cli.bot.schema import SCHEMA_VERSION
from tests.instance import FAST_CONFIG, Instance, alive
from tests.support import khronos_database, wait_for

NAMED = re.compile(r"^khronos-\d{8}T\d{6}Z(-\d+)?\.db$")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _named(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if NAMED.match(p.name))


def _answered(instance: Instance, count: int) -> bool:
    ledger = instance.ledger()
    return bool(ledger["answered"] == count and not ledger["unanswered"])


def test_backup_while_running_then_restore_refusals_and_restore(make_instance: Any) -> None:
    """A copy taken through the running worker is 0600 with a matching checksum (and one taken
    by the command itself once it stopped); restore is refused (exit 1, nothing touched) while
    the bot runs, for a copy that fails its checksum and for a corrupted copy without one; a
    good copy restores and the replaced file is kept."""
    config = FAST_CONFIG + '[backup]\ninterval = "none"\n'
    instance: Instance = make_instance(config=config).start()
    instance.push(42, "hello before the backup")
    wait_for(lambda: _answered(instance, 1))
    taken = instance.khronos("backup", "--json")
    assert taken.returncode == 0, taken.stderr
    copy = json.loads(taken.stdout)
    path = Path(copy["path"])
    assert path.parent == instance.state_dir / "backups" and NAMED.match(path.name)
    assert copy["offline"] is False and copy["schema_version"] == SCHEMA_VERSION
    assert path.stat().st_mode & 0o777 == 0o600
    assert _sha(path) == copy["sha256"]
    assert (path.parent / f"{path.name}.sha256").read_text() == f"{copy['sha256']}  {path.name}\n"

    refused = instance.khronos("restore", str(path))
    assert refused.returncode == 1
    assert "stop it first" in refused.stderr and "not touched" in refused.stderr
    assert not list(instance.state_dir.glob("khronos.db.replaced-*"))

    instance.signal(signal.SIGTERM)
    assert instance.wait() == 0
    database = instance.state_dir / "khronos.db"
    before = database.read_bytes()
    offline = instance.khronos("backup", str(instance.root / "offline.db"), "--json")
    assert offline.returncode == 0 and json.loads(offline.stdout)["offline"] is True
    assert _sha(instance.root / "offline.db") == json.loads(offline.stdout)["sha256"]

    damaged = instance.root / "damaged.db"
    damaged.write_bytes(path.read_bytes()[:-1] + b"\x00")
    (instance.root / "damaged.db.sha256").write_text(f"{copy['sha256']}  damaged.db\n")
    corrupted = instance.root / "corrupted.db"
    raw = bytearray(path.read_bytes())
    raw[4096 : 4096 * 3] = b"\xa5" * (4096 * 2)  # pages 2 and 3: tables' b-trees
    corrupted.write_bytes(bytes(raw))
    for bad, said in ((damaged, "checksum"), (corrupted, "")):
        result = instance.khronos("restore", str(bad))
        assert result.returncode == 1, (bad, result.stdout, result.stderr)
        assert said in result.stderr and "not touched" in result.stderr
        assert database.read_bytes() == before
        assert not list(instance.state_dir.glob("khronos.db.replaced-*"))
        assert not list(instance.state_dir.glob(".khronos.db.*"))

    restored = instance.khronos("restore", str(path), "--json")
    assert restored.returncode == 0, restored.stderr
    done = json.loads(restored.stdout)
    assert done["checksum"] == "ok" and done["schema_version"] == SCHEMA_VERSION
    assert _sha(database) == copy["sha256"]
    assert Path(done["replaced"]).read_bytes() == before


def test_kill_9_mid_backup_leaves_no_partial_backup(make_instance: Any) -> None:
    """A worker killed (SIGKILL) while writing a copy leaves no file under a backup's name (only
    its temporary one); the supervisor's next worker runs and lists no backup."""
    config = FAST_CONFIG + '[backup]\ninterval = "none"\nbandwidth = 1\npages_per_step = 16\n'
    instance: Instance = make_instance(config=config)
    khronos_database(instance.state_dir / "khronos.db", megabytes=6)  # six seconds at 1 MiB/s
    instance.start()
    worker = instance.status()["pid"]
    backups = instance.state_dir / "backups"
    command = [sys.executable, "-m", "khronos_cli", "backup", "--state-dir"]
    client = subprocess.Popen(
        [*command, str(instance.state_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    temporary = re.compile(rf"^\.khronos-.*\.db\.{worker}\.tmp$")
    wait_for(lambda: backups.is_dir() and any(temporary.match(p.name) for p in backups.iterdir()))
    os.kill(worker, signal.SIGKILL)  # the supervisor stays; its worker dies mid-copy
    _, said = client.communicate(timeout=30)
    assert client.returncode == 1 and b"closed connection" in said, said
    wait_for(lambda: not alive(worker))
    assert _named(backups) == []
    assert not [p for p in backups.iterdir() if p.name.endswith(".sha256")]
    wait_for(lambda: instance.status().get("pid") not in (None, worker), timeout=60)
    listed = instance.khronos("backup", "--list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["backups"] == []


def test_scheduled_backups_rotate_to_keep(make_instance: Any) -> None:
    """Scheduled copies every second keep the newest two, each with its checksum, and
    ``--list`` says each checksum is ok."""
    config = FAST_CONFIG + '[backup]\ninterval = "1s"\nkeep = 2\n'
    instance: Instance = make_instance(config=config).start()
    wait_for(lambda: (instance.status().get("backup") or {}).get("ok", 0) >= 4, timeout=30)
    backups = instance.state_dir / "backups"

    def kept() -> tuple[list[str], list[str]]:
        """The copies and the checksum files, from one listing (a copy a second goes on)."""
        listing = sorted(p.name for p in backups.iterdir())
        return [n for n in listing if NAMED.match(n)], [n for n in listing if n.endswith(".sha256")]

    # Between two scheduled copies (not while one is being written or rotated away): exactly
    # two copies, each with its checksum file and no other.
    seen: list[tuple[list[str], list[str]]] = []

    def settled() -> bool:
        seen.append(kept())
        return len(seen[-1][0]) == 2 and len(seen[-1][1]) == 2

    wait_for(settled, timeout=30)
    names, sums = seen[-1]
    assert sums == [f"{name}.sha256" for name in names], (names, sums)
    listed = json.loads(instance.khronos("backup", "--list", "--json").stdout)
    assert {item["checksum"] for item in listed["backups"]} == {"ok"}
    assert len(listed["backups"]) in (2, 3)  # a third only while the next copy is rotated in


def test_a_failed_scheduled_backup_is_counted_shown_and_the_bot_answers(
    make_instance: Any,
) -> None:
    """A backup directory that cannot be created (a file stands in its path): each scheduled
    copy fails, is logged, counted in /metrics, shown in ``khronos status`` and told to the
    operator chat; the bot answers."""
    instance: Instance = make_instance(config=FAST_CONFIG, operator_chat=True)
    blocker = instance.root / "not-a-dir"
    blocker.write_text("a file where the backup directory should go")
    config = FAST_CONFIG + f'[backup]\ninterval = "1s"\ndir = "{blocker}/backups"\n'
    config += '[alerts]\ngroup_window = "0.5s"\n'
    (instance.state_dir / "khronos.toml").write_text(config)
    instance.start()
    wait_for(lambda: (instance.status().get("backup") or {}).get("failed", 0) >= 2, timeout=30)
    port = instance.status()["http_port"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    failed = re.search(r'^khronos_backups_total\{outcome="failed"\} (\S+)$', metrics, re.M)
    assert failed is not None and float(failed.group(1)) >= 2
    shown = instance.khronos("status")
    assert re.search(r"backup\s+FAILED \d\d:\d\d:\d\d: Not a directory", shown.stdout), shown.stdout
    assert "backup failed: Not a directory" in instance.log()
    instance.push(7, "still there?")
    wait_for(lambda: _answered(instance, 1))
    assert instance.status()["state"] == "ready"

    def told() -> list[str]:
        return [m["text"] for m in instance.operator() if "a backup failed" in m["text"]]

    wait_for(told)
    assert "Not a directory" in told()[0]
