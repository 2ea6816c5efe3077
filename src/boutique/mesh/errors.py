"""Errors the mesh raises on the client side; each names the gRPC status a server maps it to."""

from __future__ import annotations

import grpc


class MeshUnavailable(Exception):
    """The mesh could not reach a dependency (no instance, breaker open, bulkhead full, budget spent)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class NoInstances(MeshUnavailable):
    """Discovery knows no live instance of the dependency."""


class CircuitOpen(MeshUnavailable):
    """The dependency's circuit breaker is open: the call failed fast, without touching the network."""


class BulkheadFull(MeshUnavailable):
    """Too many calls to the dependency are already in flight."""
