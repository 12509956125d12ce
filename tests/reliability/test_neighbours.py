"""Hostile neighbours: another user of the machine can neither lend khronos its state directory
(owned by another uid, shared, symlinked away, with a planted log symlink: refused at start, exit
78, nothing written or chmod'ed through a link) nor answer in its place (a control socket served
by another uid is refused by the CLI)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.instance import khronos
from tests.reliability.harness import FULL, NOBODY

pytestmark = pytest.mark.timeout(300 if FULL else 120)


def _run(state_dir: Path, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """`khronos run --sandbox` on ``state_dir``; one that starts anyway is stopped and fails."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "khronos_cli",
            "run",
            "--sandbox",
            "--users",
            "0",
            "--port",
            "0",
            "--state-dir",
            str(state_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        raise AssertionError(f"khronos run started on {state_dir}: {err[-500:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 78, (done.returncode, done.stderr[-800:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


def _immutable(path: Path) -> bool:
    """chattr +i ``path``; False where the filesystem or the capabilities do not allow it."""
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    return subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0


def test_a_state_directory_that_is_not_ours_is_refused_at_start(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    """`khronos run --state-dir` owned by another uid (0777, with khronos.log a symlink), holding
    a planted log symlink, a symlink to another user's directory, a regular file, a group-
    writable or immutable directory, or a path too long for the socket: exit 78 with one line,
    nothing written through a link, nothing chmod'ed through one."""
    if os.getuid() != 0:
        pytest.skip("needs root to make directories owned by another uid")
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "khronos.log").symlink_to(target)
    os.lchown(foreign / "khronos.log", NOBODY, NOBODY)
    os.chown(foreign, NOBODY, NOBODY)
    os.chmod(foreign, 0o777)
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    (planted / "khronos.log").symlink_to(target)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    link = tmp_path / "link"
    link.symlink_to(theirs)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o770)
    regular = tmp_path / "regular"
    regular.write_text("")
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    frozen = tmp_path / "frozen"
    frozen.mkdir(mode=0o700)
    lines = {
        "owned by another uid": _refused(_run(foreign), str(foreign), "uid 65534"),
        "planted log symlink": _refused(_run(planted), "khronos.log", "symlink"),
        "symlink to another uid's dir": _refused(_run(link), str(link), "uid 65534"),
        "group-writable": _refused(_run(shared), str(shared), "writable by group"),
        "a regular file": _refused(_run(regular), str(regular), "not a directory"),
        "socket path too long": _refused(_run(deep), "too long"),
    }
    if _immutable(frozen):
        try:
            lines["immutable"] = _refused(_run(frozen), str(frozen), "cannot write")
        finally:
            subprocess.run(["chattr", "-i", str(frozen)], check=True)
    figures("hostile neighbours: state directory refused", **lines)
    assert target.read_text() == "keep me\n"
    assert theirs.stat().st_mode & 0o777 == 0o755 and foreign.stat().st_mode & 0o777 == 0o777
    assert not deep.exists() or not any(deep.iterdir())


SPOOF = textwrap.dedent("""
    import json, socket, sys
    s = socket.socket(socket.AF_UNIX)
    s.bind(sys.argv[1])
    s.listen(16)
    print("ready", flush=True)
    body = json.dumps({"state": "ready", "pid": 1, "spoofed": True}).encode()
    head = "HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\n"
    while True:
        c, _ = s.accept()
        try:
            c.recv(65536)
            c.sendall(f"{head}Content-Length: {len(body)}\\r\\n\\r\\n".encode() + body)
        except OSError:
            pass
        c.close()
""")


def test_the_cli_refuses_a_control_socket_served_by_another_uid(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    """A listener of uid 65534 swapped in as <state-dir>/khronos.sock: `status` (both paths),
    `breakers` and `stop` refuse with one line naming the uid (exit 1), believing nothing."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or os.getuid() != 0:
        pytest.skip("needs root and a system python3 to run a server as another user")
    home = Path(tempfile.mkdtemp(prefix="khronos-spoof-"))
    os.chown(home, NOBODY, NOBODY)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    spoof = subprocess.Popen(
        [python, "-c", SPOOF, str(home / "s.sock")],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert spoof.stdout is not None and spoof.stdout.readline().strip() == "ready"
        os.rename(home / "s.sock", state / "khronos.sock")
        runs = {
            " ".join(args): khronos(
                *args, "--state-dir", str(state), timeout=30, env={**os.environ, "NO_COLOR": "1"}
            )
            for args in (("status", "--json"), ("status",), ("breakers",), ("stop",))
        }
    finally:
        spoof.kill()
        spoof.communicate()
        shutil.rmtree(home)
    figures(
        "hostile neighbours: spoofed control socket",
        answers={k: (v.returncode, v.stderr.strip()) for k, v in runs.items()},
    )
    for args, done in runs.items():
        assert done.returncode == 1 and done.stdout == "", (args, done.stdout, done.stderr)
        assert "uid 65534" in done.stderr and len(done.stderr.strip().splitlines()) == 1, args
