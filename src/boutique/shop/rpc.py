"""What every shop client and server shares: the typed-client base and the service entry point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from google.protobuf.message import Message

from boutique.mesh import GrpcServer, ProcessInfo, ServiceBinding, StaticEndpoints
from boutique.mesh.dependency import CallPolicy
from boutique.mesh.discovery.static import StaticResolver
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.resilience import BreakerConfig
from boutique.mesh.runtime import Mesh
from boutique.shop.errors import translating
from boutique.shop.proto import demo_pb2 as pb

DEFAULT_TIMEOUT = 3.0
# Dependencies a page can do without (recommendations, ads) answer fast or not at all.
OPTIONAL_TIMEOUT = 1.0
OPTIONAL_BREAKER = BreakerConfig(slow_call_duration=0.5, slow_call_rate_threshold=0.5)


class ShopClient:
    """Base of the typed clients: a mesh dependency on one shop service, calls with a deadline.

    Subclasses name the service, its address variable, the generated stub and which RPCs are
    idempotent (only those are retried on another instance), and expose one plain async method per
    RPC built on `_call`, so callers never see gRPC types for errors.
    """

    service: ClassVar[str]
    address_variable: ClassVar[str]
    stub_type: ClassVar[type[Any]]
    idempotent: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, target: StaticEndpoints | GrpcDependency, timeout: float = DEFAULT_TIMEOUT) -> None:
        if isinstance(target, StaticEndpoints):
            self.endpoints: StaticEndpoints | None = target
            resolver = StaticResolver(list(target.addresses))
            target = GrpcDependency(self.service, resolver, type(self).stub_type, self.policy(timeout))
        else:
            self.endpoints = None
        self.dependency = target
        self.timeout = timeout

    @classmethod
    def policy(cls, timeout: float = DEFAULT_TIMEOUT) -> CallPolicy:
        """Call behaviour towards this service (subclasses add breakers or change timeouts)."""
        return CallPolicy(timeout=timeout)

    @classmethod
    def from_env(cls, timeout: float = DEFAULT_TIMEOUT, mesh: Mesh | None = None) -> Any:
        """A client resolving the service by name, or by its address variable when that is set."""
        mesh = mesh or Mesh.default()
        dependency = mesh.grpc(cls.service, cls.stub_type, cls.policy(timeout), cls.address_variable)
        return cls(dependency, timeout)

    async def _call(
        self,
        method: str,
        request: Message,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        idempotent: bool | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
    ) -> Any:
        """Call one RPC through the mesh; failures become boutique.shop.errors types.

        Retries to another instance happen only for idempotent RPCs (the class's `idempotent` set, or
        `idempotent=True` for a call that carries an idempotency key the server honours).
        """
        async with translating(self.service):
            return await self.dependency.call(
                method,
                request,
                idempotent=method in self.idempotent if idempotent is None else idempotent,
                metadata=metadata,
                timeout=timeout or self.timeout,
                fallback=fallback,
            )

    async def close(self) -> None:
        """Stop discovery and close the channels."""
        await self.dependency.close()


class OptionalShopClient(ShopClient):
    """A client of a service the pages can do without: a short deadline, a breaker that also trips on
    slow answers, and a fallback per call (see the recommendation and ad clients)."""

    @classmethod
    def policy(cls, timeout: float = DEFAULT_TIMEOUT) -> CallPolicy:
        """Answer fast or not at all."""
        return CallPolicy(timeout=min(timeout, OPTIONAL_TIMEOUT), breaker=OPTIONAL_BREAKER)


def binding(service_name: str, servicer: object) -> ServiceBinding:
    """Bind a servicer to `hipstershop.<service_name>`."""
    return ServiceBinding(pb.DESCRIPTOR.services_by_name[service_name], servicer)


async def run_server(
    service: str,
    bindings: list[ServiceBinding],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    info: ProcessInfo | None = None,
) -> None:
    """Serve until SIGTERM (registered in discovery while serving), then drain and call `on_stop`."""
    server = GrpcServer(info or ProcessInfo.from_env(service), bindings, mesh=Mesh.default(), register=True)
    await server.run(on_stop)
