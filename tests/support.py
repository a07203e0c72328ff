"""Small helpers shared by test packages."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (IPv4, `host`), for a server the test starts next."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
