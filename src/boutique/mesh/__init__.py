"""boutique.mesh: the microservice runtime (servers, clients, discovery, resilience). Knows nothing of the shop."""

from boutique.mesh.client import StaticEndpoints
from boutique.mesh.config import ProcessInfo, env_duration, parse_duration
from boutique.mesh.dependency import CallPolicy, Dependency, Outcome
from boutique.mesh.errors import BulkheadFull, CircuitOpen, MeshUnavailable, NoInstances
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.http_client import HttpDependency
from boutique.mesh.instance import Instance
from boutique.mesh.logs import configure_logging
from boutique.mesh.runtime import Mesh
from boutique.mesh.server import GrpcServer, ServiceBinding

__all__ = [
    "BulkheadFull",
    "CallPolicy",
    "CircuitOpen",
    "Dependency",
    "GrpcDependency",
    "GrpcServer",
    "HttpDependency",
    "Instance",
    "Mesh",
    "MeshUnavailable",
    "NoInstances",
    "Outcome",
    "ProcessInfo",
    "ServiceBinding",
    "StaticEndpoints",
    "configure_logging",
    "env_duration",
    "parse_duration",
]
