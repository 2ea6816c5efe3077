"""What every shop client and server shares: the typed-client base and the service entry point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from google.protobuf.message import Message

from boutique.mesh import ChannelPool, GrpcServer, ProcessInfo, ServiceBinding, StaticEndpoints
from boutique.shop.errors import translating
from boutique.shop.proto import demo_pb2 as pb

DEFAULT_TIMEOUT = 3.0


class ShopClient:
    """Base of the typed clients: endpoints from an address variable, calls with a deadline.

    Subclasses name the service, the address variable and the generated stub, and expose one
    plain async method per RPC built on `_call`, so callers never see gRPC types for errors.
    """

    service: ClassVar[str]
    address_variable: ClassVar[str]
    stub_type: ClassVar[type[Any]]

    def __init__(self, endpoints: StaticEndpoints, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.pool: ChannelPool[Any] = ChannelPool(endpoints, type(self).stub_type)
        self.timeout = timeout

    @classmethod
    def from_env(cls, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """A client for the endpoints in the service's address variable."""
        return cls(StaticEndpoints.from_env(cls.address_variable), timeout)

    async def _call(self, method: str, request: Message, timeout: float | None = None) -> Any:
        """Call one RPC on the next endpoint; gRPC failures become boutique.shop.errors types."""
        async with translating(self.service):
            return await getattr(self.pool.stub(), method)(request, timeout=timeout or self.timeout)

    async def close(self) -> None:
        """Close the channels."""
        await self.pool.close()


def binding(service_name: str, servicer: object) -> ServiceBinding:
    """Bind a servicer to `hipstershop.<service_name>`."""
    return ServiceBinding(pb.DESCRIPTOR.services_by_name[service_name], servicer)


async def run_server(
    service: str,
    bindings: list[ServiceBinding],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    info: ProcessInfo | None = None,
) -> None:
    """Serve until SIGTERM, then drain and call `on_stop` to release clients and stores."""
    server = GrpcServer(info or ProcessInfo.from_env(service), bindings)
    await server.run(on_stop)
