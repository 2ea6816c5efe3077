"""Static discovery: a fixed list of host:port addresses, as the *_SERVICE_ADDR variables give them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from boutique.mesh.client import StaticEndpoints
from boutique.mesh.discovery.base import Registrar, Resolver
from boutique.mesh.instance import Instance


def instance_at(service: str, address: str, instance_id: str | None = None) -> Instance:
    """An instance of `service` at host:port with its gRPC port set; the id defaults to the address."""
    host, _, port = address.rpartition(":")
    return Instance(service=service, id=instance_id or address, host=host, ports={"grpc": int(port)})


class StaticResolver(Resolver):
    """Yields one instance per configured address (the id is the address), once: the set never changes."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__()
        self.addresses = StaticEndpoints.parse(",".join(addresses)).addresses

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the fixed set and end."""
        if self.closed:
            return
        yield [instance_at(service, address) for address in self.addresses]


class StaticRegistrar(Registrar):
    """Registers nothing: with static addresses or DNS the platform, not the process, publishes it."""

    def __init__(self) -> None:
        self.instance: Instance | None = None

    async def register(self, instance: Instance, ttl: float) -> None:
        """Remember the instance (for introspection) and do nothing else."""
        self.instance = instance

    async def deregister(self) -> None:
        """Forget the instance."""
        self.instance = None
