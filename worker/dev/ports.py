"""Which TCP port an embedded server listens on: a free one, and the same one from run to run."""

from __future__ import annotations

import socket
from contextlib import suppress
from pathlib import Path

__all__ = ["HOST", "free_port", "remember_port", "remembered_port"]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    """True if a server could listen on host:port now (nothing else listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def remembered_port(port_file: Path, host: str) -> int:
    """The port of the previous run in this data folder if it is free now, else a free one.

    Keeps the URLs of ``billing-worker run`` the same from one run to the next.
    """
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return free_port(host)
    return port if 0 < port < 65536 and _port_free(host, port) else free_port(host)


def remember_port(port_file: Path, port: int) -> None:
    with suppress(OSError):  # only a convenience
        port_file.write_text(f"{port}\n")
