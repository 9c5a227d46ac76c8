"""Listening sockets for services: owner-only Unix sockets, or one handed over by systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

SD_LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """The first socket passed by systemd socket activation (LISTEN_FDS), if meant for us.

    The variables are removed afterwards so that child processes do not claim the socket too.
    """
    try:
        pid = int(os.environ.get("LISTEN_PID", "0"))
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    if pid != os.getpid() or count < 1:
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    os.set_inheritable(sock.fileno(), False)
    sock.setblocking(False)
    return sock


def _someone_listens(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def bind_unix_socket(path: Path, backlog: int = 128) -> socket.socket:
    """Bind a stream socket at ``path`` readable and writable by its owner only.

    A stale socket file left by a crashed process is replaced; a live one is an error, so two
    instances of one service can never both believe they own the socket.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if _someone_listens(path):
            raise RuntimeError(f"another process is already listening on {path}")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600 by bind(), never wider
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock

