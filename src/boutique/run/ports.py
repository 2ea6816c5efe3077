"""Loopback ports for `boutique up`: free ones for backends, a clear error for a busy one."""

from __future__ import annotations

import socket


class PortBusy(OSError):
    """A port someone asked for is already taken."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel reports free right now on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise PortBusy naming the port, its purpose and the flag that changes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind: a listener makes the port busy, closed connections do not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortBusy(
                f"port {port} on {host} is busy ({what}): stop whatever listens there or choose another with {flag}"
            ) from exc
