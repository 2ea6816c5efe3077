"""The address a process is reached at, apart from the one it listens on.

A process in a container or a pod listens on every interface (`BIND_HOST=0.0.0.0`), but 0.0.0.0 is no
address anyone can call: what it registers in discovery and reports is, in this order,
BOUTIQUE_ADVERTISE_HOST, POD_IP (Kubernetes' downward API), for a wildcard bind the address this
host's name resolves to (else the first non-loopback interface address), else BIND_HOST itself.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable

import psutil

log = logging.getLogger(__name__)

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")

Lookup = Callable[[str], Iterable[str]]
Interfaces = Callable[[], Iterable[str]]


def is_wildcard(host: str) -> bool:
    """Whether binding to `host` listens on every interface (0.0.0.0, ::, or empty)."""
    return host.strip() in WILDCARDS


def is_ip(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 literal (brackets allowed around IPv6)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def host_problem(host: str) -> str | None:
    """Why `host` cannot be an address others call (None when it can): an IP literal or a DNS name."""
    if is_wildcard(host):
        return "a wildcard is where a process listens, not where it is reached"
    if is_ip(host) or _HOST_NAME.fullmatch(host):
        return None
    return "neither an IP address nor a host name (give one without scheme or port)"


def _usable(address: str, versions: tuple[int, ...]) -> bool:
    """An address others can call: of a wanted IP version, not loopback, link-local or a wildcard."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return ip.version in versions and not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def _resolve_hostname(name: str) -> list[str]:
    """Every address the host name resolves to (the system's resolver: /etc/hosts first, usually)."""
    try:
        records = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(sockaddr[0]) for *_, sockaddr in records]


def _interface_addresses() -> list[str]:
    """Every address of every network interface that is up, in the order the system lists them."""
    try:
        stats = psutil.net_if_stats()
        found: list[str] = []
        for name, addresses in psutil.net_if_addrs().items():
            if name in stats and not stats[name].isup:
                continue
            found.extend(a.address for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6))
        return found
    except OSError:
        return []


def advertised_host(
    bind_host: str,
    configured: str = "",
    hostname: Callable[[], str] = socket.gethostname,
    lookup: Lookup = _resolve_hostname,
    interfaces: Interfaces = _interface_addresses,
) -> str:
    """The address to register and report: `configured` (BOUTIQUE_ADVERTISE_HOST or POD_IP) when given;
    for a wildcard bind the host name's address, else the first non-loopback interface address, else
    loopback; otherwise the bind address itself. Never a wildcard."""
    if configured:
        return configured
    if not is_wildcard(bind_host):
        return bind_host.strip()
    ipv6 = bind_host.strip() in ("::", "[::]")
    versions = (6, 4) if ipv6 else (4,)  # a socket on :: takes IPv4 too
    for source in (lambda: lookup(hostname()), interfaces):
        for address in source():
            if _usable(address, versions):
                return address.split("%", 1)[0]
    fallback = "::1" if ipv6 else "127.0.0.1"
    log.warning(
        "no address but loopback to advertise; set BOUTIQUE_ADVERTISE_HOST or POD_IP",
        extra={"bind_host": bind_host, "advertised": fallback},
    )
    return fallback
