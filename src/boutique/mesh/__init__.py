"""boutique.mesh: the microservice runtime (servers, clients, discovery, resilience). Knows nothing of the shop."""

from boutique.mesh.client import StaticEndpoints
from boutique.mesh.config import ProcessInfo
from boutique.mesh.dependency import CallPolicy, CallStatus, Dependency, Outcome
from boutique.mesh.errors import BulkheadFull, CircuitOpen, MeshUnavailable, NoInstances
from boutique.mesh.failure import Failure, failure_of
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.http_client import HttpDependency
from boutique.mesh.instance import Instance
from boutique.mesh.logs import configure_logging
from boutique.mesh.runtime import Mesh
from boutique.mesh.server import GrpcServer, ServiceBinding
from boutique.mesh.settings import MeshSettings, SettingsError, env_duration, parse_duration

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
