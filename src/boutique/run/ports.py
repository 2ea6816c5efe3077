"""Loopback ports for `boutique up`: free ones for backends, a clear error for a busy one."""

from __future__ import annotations

import socket

from boutique.sockets import port_in_use


class PortBusy(OSError):
    """A port someone asked for is already taken."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel reports free right now on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_taken(host: str, port: int) -> bool:
    """Whether something listens on the port (closed connections lingering do not count)."""
    return port_in_use(host, port)


def ensure_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise PortBusy naming the port, its purpose and the flag that changes it."""
    if is_taken(host, port):  # as the servers themselves bind: lingering closed connections do not count
        raise PortBusy(
            f"port {port} on {host} is busy ({what}): stop whatever listens there or choose another with {flag}"
        )
