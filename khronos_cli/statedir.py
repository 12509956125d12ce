"""The state directory: ours or refused, and the files in it opened safely. Standard library only.

The supervisor, the worker and the CLI all go through here (DESIGN.md amendment: "the state
directory is ours or refused"):

- :func:`prepare` (``khronos run``, the supervisor, the control server) creates it 0700, or accepts
  an existing one only when it is a directory owned by our uid and not writable by group or
  others. A real directory of ours that others may read is tightened to 0700; a symlink is
  accepted only when both the link and its target are ours, and is never chmod'ed through.
  Nothing in it may belong to another uid (what another user left there is not ours to open),
  and none of the names we write may be a symlink. It must be writable (probed, so an immutable
  directory is refused at start, not at the first write) and short enough for the control
  socket's path (and its temporary name) to fit in a unix socket address (108 bytes with the
  NUL). Otherwise :class:`StateDirError`: exit 78, one line naming the path and what to do.
- :func:`check` is the same verdict without creating or changing anything, for readers (the CLI
  believes no file in a directory another user controls).
- Every file we create here is 0600 and opened with ``O_NOFOLLOW``: a symlink planted under one of
  our names is refused, never followed. State files are written whole under a temporary name and
  renamed into place; :func:`read_json` reads only regular files and never follows a link.

The names of the files (the socket's is the control protocol's) live here, once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from khronos_cli.control.protocol import SOCKET_NAME
from khronos_cli.errors import StateDirError

TYPE_CHECKING = False  # the CLI's fast path never imports typing (~8% of its CPU)
if TYPE_CHECKING:
    from typing import IO, Any

__all__ = [
    "CONFIG_FILE",
    "DB_FILE",
    "LOCK_FILE",
    "LOG_FILE",
    "NOTIFY_SOCKET",
    "REPORT_FILE",
    "RUN_LOG",
    "RUN_MARKER",
    "SANDBOX_FILE",
    "SANDBOX_IDS_FILE",
    "SUPERVISOR_FILE",
    "StateDirError",
    "append_private",
    "check",
    "default_state_dir",
    "mark_running",
    "mark_stopped",
    "open_private",
    "prepare",
    "previous_run",
    "read_json",
    "socket_temporary",
    "write_private",
]

SUPERVISOR_FILE = "supervisor.json"  # the supervisor's state, for `khronos status`
LOCK_FILE = "khronos.lock"  # held by the supervisor: one instance per state directory
NOTIFY_SOCKET = "notify.sock"  # the supervisor's sd_notify datagram socket
RUN_MARKER = "run.json"  # the worker runs (a marker left behind means it was killed)
REPORT_FILE = "last-shutdown.json"  # the last stop's report
LOG_FILE = "khronos.log"  # the worker's log (rotated: .1, .2, .3)
RUN_LOG = "run.log"  # the output of `khronos run --detach`
DB_FILE = "khronos.db"  # the journal, the outbox and the conversations (SQLite, WAL)
CONFIG_FILE = "khronos.toml"  # the configuration read when no --config is given
SANDBOX_FILE = "sandbox.json"  # the sandbox stand-ins' addresses, for `khronos run --sandbox`
SANDBOX_IDS_FILE = "sandbox-ids.json"  # where the sandbox's update ids go on from

_WRITTEN = (
    SUPERVISOR_FILE,
    LOCK_FILE,
    RUN_MARKER,
    REPORT_FILE,
    LOG_FILE,
    RUN_LOG,
)
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, one of them the terminating NUL
_PID_DIGITS = 7  # /proc/sys/kernel/pid_max is at most 4194304
_MAX_READ = 1 << 20


def socket_temporary(socket: Path) -> Path:
    """The private name a socket is bound under (in our 0700 directory) before it is renamed
    into place, so it never exists under its own name with a looser mode."""
    return socket.with_name(f".{socket.name}.{os.getpid()}")


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _verdict(path: Path) -> bool:
    """Raise StateDirError unless ``path`` is missing or ours; False when it is a symlink."""
    me = os.geteuid()
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise StateDirError(f"cannot inspect the state directory {path}: {exc.strerror}") from None
    real = not stat.S_ISLNK(link.st_mode)
    if not real:
        if link.st_uid != me:
            raise StateDirError(
                f"state directory {path} is a symlink owned by uid {link.st_uid}, not by you "
                f"(uid {me}); remove it or use another --state-dir"
            )
        try:
            target = os.stat(path)
        except OSError as exc:
            raise StateDirError(
                f"state directory {path} is a symlink that cannot be followed ({exc.strerror}); "
                "remove it or use another --state-dir"
            ) from None
        where = f"{path} (a symlink to {os.path.realpath(path)})"
    else:
        target, where = link, str(path)
    if not stat.S_ISDIR(target.st_mode):
        raise StateDirError(
            f"state directory {where} is not a directory; pass --state-dir a directory, "
            "or a path for khronos to create"
        )
    if target.st_uid != me:
        raise StateDirError(
            f"state directory {where} is owned by uid {target.st_uid}, not by you (uid {me}); "
            "use a directory of your own with --state-dir"
        )
    if target.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(
            f"state directory {where} is writable by group or others (mode {_mode(target)}); "
            f"run `chmod 700 {path}` if its files are yours, or use another --state-dir"
        )
    return real


def check(path: Path) -> None:
    """Raise StateDirError unless ``path`` is missing or a directory that is ours."""
    _verdict(path)


def prepare(path: Path) -> Path:
    """Create ``path`` 0700, or accept it when it is ours (tightening a real directory of ours to
    0700), and check it is writable and short enough for the control socket; ``path``."""
    temporary = socket_temporary(path / SOCKET_NAME)
    fits = len(os.fsencode(temporary)) + _PID_DIGITS - len(str(os.getpid()))
    if fits > _SUN_PATH_MAX:
        raise StateDirError(
            f"state directory {path} is too long for the control socket's path ({fits} bytes; "
            f"a unix socket path holds at most {_SUN_PATH_MAX}); use a shorter --state-dir"
        )
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=False)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateDirError(
            f"cannot create the state directory {path}: {exc.strerror}; use another --state-dir"
        ) from None
    if _verdict(path):
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode != 0o700:
            _tighten(path)
    _contents(path)
    _probe(path)
    return path


def _contents(path: Path) -> None:
    me = os.geteuid()
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        raise StateDirError(
            f"cannot list the state directory {path}: {exc.strerror}; use another --state-dir"
        ) from None
    for entry in entries:
        owner = entry.stat(follow_symlinks=False).st_uid
        if owner != me:
            raise StateDirError(
                f"{entry.path} in the state directory belongs to uid {owner}, not to you "
                f"(uid {me}); remove it"
            )
        if entry.name in _WRITTEN and entry.is_symlink():
            raise StateDirError(
                f"{entry.path} is a symlink: khronos does not follow links in its state "
                "directory; remove it"
            )


def _tighten(path: Path) -> None:
    """chmod 0700 the directory itself: opened without following a link, changed by its fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StateDirError(
            f"cannot open the state directory {path}: {exc.strerror}; use another --state-dir"
        ) from None
    try:
        os.fchmod(fd, 0o700)
    except OSError as exc:
        raise StateDirError(
            f"cannot make the state directory {path} private (chmod 700): {exc.strerror}; "
            "use another --state-dir"
        ) from None
    finally:
        os.close(fd)


def _probe(path: Path) -> None:
    """Create and remove a file: an immutable or read-only directory is refused now."""
    probe = path / f".probe.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except OSError as exc:
        raise StateDirError(
            f"cannot write in the state directory {path}: {exc.strerror}; use another --state-dir"
        ) from None


def open_private(path: Path, flags: int) -> int:
    """``os.open`` for a file of ours: 0600 when created, never through a symlink, a regular
    file owned by us (a looser mode left by an older version is tightened to 0600)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateDirError(
                f"{path} is a symlink: khronos does not follow links in its state directory; "
                "remove it"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise StateDirError(f"{path} is not a regular file of yours; remove it")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def append_private(path: Path) -> IO[bytes]:
    """``path`` opened for appending (created 0600, never through a symlink)."""
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "ab")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: a 0600 temporary file renamed into place (the rename
    replaces whatever sits at ``path``, a planted symlink included, and follows nothing)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable, not a regular file, a
    symlink, larger than 1 MiB or not an object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return None
            raw = file.read(_MAX_READ + 1)
    except OSError:
        return None
    if len(raw) > _MAX_READ:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def previous_run(
    state_dir: Path, *, alive: Callable[[object], bool] = lambda pid: False
) -> dict[str, Any] | None:
    """How the last run ended: its stop's report, or ``killed`` when the run marker of a run
    whose process is not ``alive`` is still there (None: no run before). A starting worker asks
    with the default: any marker left is a run that never wrote its report."""
    marker = read_json(state_dir / RUN_MARKER)
    if marker is None or alive(marker.get("pid")):
        return read_json(state_dir / REPORT_FILE)
    started = marker.get("started_at")
    return {"result": "killed", "exit_code": None, "pid": marker.get("pid"), "started_at": started}


def mark_running(state_dir: Path, started_at: float) -> None:
    """``run.json`` says this run is on (0600, never through a symlink); the last report goes."""
    marker = json.dumps({"pid": os.getpid(), "started_at": started_at})
    write_private(state_dir / RUN_MARKER, marker)
    (state_dir / REPORT_FILE).unlink(missing_ok=True)


def mark_stopped(state_dir: Path) -> None:
    """The run has written its report: it is no longer on."""
    (state_dir / RUN_MARKER).unlink(missing_ok=True)


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$KHRONOS_STATE_DIR``, else ``$XDG_STATE_HOME/khronos``, else ``~/.local/state/khronos``."""
    env = os.environ if env is None else env
    if env.get("KHRONOS_STATE_DIR"):
        return Path(env["KHRONOS_STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "khronos"
