"""Free TCP ports of 127.0.0.1 for the servers that scripts and tests start (S3, Ray nodes, Airflow).

The operating system picks each port; it is free when picked, but another process may take it
before our server binds it. A port nothing listens on (for a test of a connection that fails) is
one of these too.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all bound at once while picked, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """One free port."""
    return free_ports(1)[0]
