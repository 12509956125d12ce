"""Who is at the other end of a unix socket: the peer's uid, as the kernel says (SO_PEERCRED).

Both ends check it. The control server serves only its own uid; the CLI believes a server only
when it runs as the CLI's uid (a socket swapped in by another user answers nothing we trust).
"""

from __future__ import annotations

import socket
import struct

__all__ = ["peer_uid"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected unix socket; None off Linux."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])
