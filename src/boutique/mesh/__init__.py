"""boutique.mesh: the microservice runtime (servers, clients, discovery, resilience). Knows nothing of the shop."""

from boutique.mesh.client import ChannelPool, StaticEndpoints, call_metadata
from boutique.mesh.config import ProcessInfo, env_duration, parse_duration
from boutique.mesh.logs import configure_logging
from boutique.mesh.server import GrpcServer, ServiceBinding

__all__ = [
    "ChannelPool",
    "GrpcServer",
    "ProcessInfo",
    "ServiceBinding",
    "StaticEndpoints",
    "call_metadata",
    "configure_logging",
    "env_duration",
    "parse_duration",
]
