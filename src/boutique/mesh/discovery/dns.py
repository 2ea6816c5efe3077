"""DNS discovery: every A/AAAA record of a name, re-resolved periodically (Kubernetes headless services)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from boutique.mesh.discovery.base import Publish, Resolver, RetryPolicy, Trouble, sorted_set
from boutique.mesh.instance import Instance

log = logging.getLogger(__name__)

Lookup = Callable[[str, int], Awaitable[list[str]]]


async def lookup_all(name: str, port: int) -> list[str]:
    """Every distinct address `name` resolves to (IPv6 ones in brackets, ready for host:port)."""
    loop = asyncio.get_running_loop()
    records = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for family, _type, _proto, _canon, sockaddr in records:
        host = str(sockaddr[0])
        address = f"[{host}]" if family == socket.AF_INET6 else host
        if address not in found:
            found.append(address)
    return found


class DnsResolver(Resolver):
    """Resolves `name` to all its addresses every `interval` seconds; yields when the set changes.

    Each address becomes an instance with id "address:port" and the gRPC port `port`. A failed or
    empty lookup keeps the last known set (logged) and is retried with backoff.
    """

    def __init__(
        self,
        name: str,
        port: int,
        interval: float = 5.0,
        retry: RetryPolicy | None = None,
        lookup: Lookup = lookup_all,
    ) -> None:
        super().__init__()
        self.name = name
        self.port = port
        self.interval = interval
        self.retry = retry or RetryPolicy(base=min(interval, 1.0), cap=max(interval, 1.0))
        self._lookup = lookup

    def _instances(self, service: str, addresses: list[str]) -> list[Instance]:
        """One instance per address."""
        return sorted_set(
            Instance(service=service, id=f"{address}:{self.port}", host=address, ports={"grpc": self.port})
            for address in addresses
        )

    def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the resolved set now and whenever a re-resolution finds a different one."""
        return self._follow(lambda publish: self._resolve_forever(service, publish))

    async def _resolve_forever(self, service: str, publish: Publish) -> None:
        """Resolve every interval; on errors keep what was published and retry with backoff (a name that
        does not resolve yet, such as a Service created after this process, is logged once)."""
        trouble = Trouble(log, "dns lookup failed; keeping the last known instances", dns_name=self.name)
        while True:
            try:
                addresses = await self._lookup(self.name, self.port)
                if not addresses:
                    raise OSError(f"{self.name} has no address records")
            except OSError as exc:
                trouble.failed(str(exc))
                await asyncio.sleep(self.retry.delay(trouble.failures - 1))
                continue
            trouble.recovered("dns lookup answers again")
            publish(self._instances(service, addresses))
            await asyncio.sleep(self.interval)
