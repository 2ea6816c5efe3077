"""Listening sockets for every server here: loopback checks, busy-port probes, binds with a clear error.

Free of heavy imports, so `boutique up` can check ports before it loads any server code.
"""

from __future__ import annotations

import ipaddress
import os
import socket


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback IP addresses: binding there keeps a port on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_in_use(host: str, port: int) -> bool:
    """Whether a socket listens on host:port; connections of a dead process lingering in TIME_WAIT do not count.

    Binds as the servers do, with SO_REUSEADDR, so a restart right after a crash is not refused while
    the kernel still holds its closed connections. Used before handing a port to a server (gRPC's own
    bind would share a port with SO_REUSEPORT rather than fail).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def bind(host: str, port: int, what: str = "") -> socket.socket:
    """A listening TCP socket; a one-line OSError naming host:port when it is taken."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=2048)
        # Accepted connections inherit it. asyncio sets TCP_NODELAY only on sockets whose proto is TCP, and
        # create_server's is 0: without this, Nagle holds a response's body until the client's delayed ACK
        # of its headers, 40 ms on every keep-alive request after the first.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as exc:
        reason = f" ({os.strerror(exc.errno)})" if exc.errno else ""
        label = f" [{what}]" if what else ""
        raise OSError(
            f"cannot listen on {host}:{port}: port busy or address unavailable{reason}{label}"
        ) from None
