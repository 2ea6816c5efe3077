"""The embedded service registry: TTL leases, blocking queries, active health checks; server and client."""

from boutique.mesh.registry.checks import HealthChecks, parse_check
from boutique.mesh.registry.client import KeepAlive, Lease, RegistryClient, RegistryError
from boutique.mesh.registry.server import (
    DEFAULT_PORT,
    RegistryApi,
    RegistryServer,
    create_app,
    serve_registry,
)
from boutique.mesh.registry.state import (
    CheckSpec,
    LimitExceeded,
    Record,
    Registered,
    RegistryState,
)

__all__ = [
    "DEFAULT_PORT",
    "CheckSpec",
    "HealthChecks",
    "KeepAlive",
    "Lease",
    "LimitExceeded",
    "Record",
    "Registered",
    "RegistryApi",
    "RegistryClient",
    "RegistryError",
    "RegistryServer",
    "RegistryState",
    "create_app",
    "parse_check",
    "serve_registry",
]
