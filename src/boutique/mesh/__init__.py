"""boutique.mesh: the microservice runtime (servers, clients, discovery, resilience). Knows nothing of the shop.

The names below are imported from their modules on first use, so that importing one part (the logs of
the registry or the observatory, the settings of a command) does not import the whole runtime with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from boutique.mesh.client import StaticEndpoints
    from boutique.mesh.config import ProcessInfo
    from boutique.mesh.dependency import CallPolicy, CallStatus, Dependency, Outcome
    from boutique.mesh.durations import parse_duration
    from boutique.mesh.errors import BulkheadFull, CircuitOpen, MeshUnavailable, NoInstances
    from boutique.mesh.failure import Failure, failure_of
    from boutique.mesh.grpc_client import GrpcDependency
    from boutique.mesh.http_client import HttpDependency
    from boutique.mesh.instance import Instance
    from boutique.mesh.logs import configure_logging
    from boutique.mesh.runtime import Mesh
    from boutique.mesh.server import GrpcServer, ServiceBinding
    from boutique.mesh.settings import MeshSettings, SettingsError, env_duration

_HOMES = {
    "StaticEndpoints": "client",
    "ProcessInfo": "config",
    "CallPolicy": "dependency",
    "CallStatus": "dependency",
    "Dependency": "dependency",
    "Outcome": "dependency",
    "BulkheadFull": "errors",
    "CircuitOpen": "errors",
    "MeshUnavailable": "errors",
    "NoInstances": "errors",
    "Failure": "failure",
    "failure_of": "failure",
    "GrpcDependency": "grpc_client",
    "HttpDependency": "http_client",
    "Instance": "instance",
    "configure_logging": "logs",
    "Mesh": "runtime",
    "GrpcServer": "server",
    "ServiceBinding": "server",
    "MeshSettings": "settings",
    "SettingsError": "settings",
    "env_duration": "settings",
    "parse_duration": "durations",
}

__all__ = [
    "BulkheadFull",
    "CallPolicy",
    "CallStatus",
    "CircuitOpen",
    "Dependency",
    "Failure",
    "GrpcDependency",
    "GrpcServer",
    "HttpDependency",
    "Instance",
    "Mesh",
    "MeshSettings",
    "MeshUnavailable",
    "NoInstances",
    "Outcome",
    "ProcessInfo",
    "ServiceBinding",
    "SettingsError",
    "StaticEndpoints",
    "configure_logging",
    "env_duration",
    "failure_of",
    "parse_duration",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` (one of __all__) when it is first asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the ones not imported yet included."""
    return sorted({*globals(), *_HOMES})
