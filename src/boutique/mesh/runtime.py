"""The mesh of one process: its dependencies by name, built from configuration, shared by its clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from boutique.mesh.dependency import CallPolicy, Dependency
from boutique.mesh.discovery import resolver_for
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.http_client import HttpDependency
from boutique.mesh.settings import MeshSettings

D = TypeVar("D", bound=Dependency[Any])


class Mesh:
    """Dependencies of one process, created on first use and closed together.

    Each dependency resolves through discovery by service name unless its address variable
    (e.g. CART_SERVICE_ADDR) pins it to fixed addresses or a DNS name. Without `settings` of its own
    the mesh follows the process's (`MeshSettings.current()`) each time it adds a dependency.
    """

    _default: Mesh | None = None

    def __init__(self, caller: str, settings: MeshSettings | None = None) -> None:
        self.caller = caller
        self._settings = settings
        self.dependencies: dict[str, Dependency[Any]] = {}

    @property
    def settings(self) -> MeshSettings:
        """The settings this mesh was given, else the process's."""
        return self._settings if self._settings is not None else MeshSettings.current()

    @classmethod
    def default(cls) -> Mesh:
        """The process's mesh, named after BOUTIQUE_SERVICE / OTEL_SERVICE_NAME (created on first use)."""
        if cls._default is None:
            cls._default = cls(MeshSettings.current().process.service)
        return cls._default

    def grpc(
        self,
        service: str,
        stub_factory: Callable[[grpc.aio.Channel], Any],
        policy: CallPolicy | None = None,
        address_variable: str | None = None,
    ) -> GrpcDependency:
        """The gRPC dependency on `service` (one per service and process)."""
        existing = self.dependencies.get(service)
        if isinstance(existing, GrpcDependency):
            return existing
        resolver = resolver_for(service, self.settings.discovery, address_variable)
        return self._add(service, GrpcDependency(service, resolver, stub_factory, policy, self.caller))

    def _forget(self, service: str, dependency: Dependency[Any]) -> None:
        if self.dependencies.get(service) is dependency:
            del self.dependencies[service]

    def http(
        self,
        service: str,
        policy: CallPolicy | None = None,
        address_variable: str | None = None,
        port: str = "http",
    ) -> HttpDependency:
        """The HTTP dependency on `service` (its instances' `port`), one per service and process."""
        existing = self.dependencies.get(service)
        if isinstance(existing, HttpDependency):
            return existing
        resolver = resolver_for(service, self.settings.discovery, address_variable)
        return self._add(service, HttpDependency(service, resolver, policy, self.caller, port=port))

    def _add(self, service: str, dependency: D) -> D:
        """Keep the dependency until it is closed."""
        self.dependencies[service] = dependency
        dependency.on_closed = lambda: self._forget(service, dependency)
        return dependency

    def snapshot(self) -> list[dict[str, Any]]:
        """Every dependency's state, for /mesh/status."""
        return [dependency.snapshot() for dependency in self.dependencies.values()]

    async def close(self) -> None:
        """Close every dependency."""
        for dependency in list(self.dependencies.values()):
            await dependency.close()
        self.dependencies.clear()
