"""Errors the mesh raises on the client side; each names the gRPC status a server maps it to."""

from __future__ import annotations

import grpc


class MeshUnavailable(Exception):
    """The mesh could not reach a dependency (no instance, breaker open, bulkhead full, budget spent)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, dependency: str = "") -> None:
        super().__init__(message)
        self.dependency = dependency  # which dependency could not be reached ('' when not known)


class NoInstances(MeshUnavailable):
    """Discovery knows no live instance of the dependency."""


class CircuitOpen(MeshUnavailable):
    """The dependency's circuit breaker is open: the call failed fast, without touching the network."""


class BulkheadFull(MeshUnavailable):
    """Too many calls to the dependency are already in flight."""


class InjectedFault(Exception):
    """A failure the flag file injected into a call (see mesh.faults), for a transport with no error of its own."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.grpc_code = code


class DeadlineExceeded(Exception):
    """Too little of the caller's deadline is left to do the work (or start a side effect) safely."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


# Every answer of a mesh server names the instance that served it in this trailing metadata key, so a
# caller can tell an answer of the callee from a call that failed on the way.
SERVED_BY = "x-served-by"

# A server whose call failed because one of *its* dependencies failed says which, in this trailing
# metadata key ("payment", or "cart/redis" when the cart's own store failed). A caller then knows the
# callee answered: its breaker and outlier detection do not count the failure against the callee.
FAILED_DEPENDENCY = "x-failed-dependency"

# A server (gRPC trailer) or HTTP frontend (header) marks a call its concurrency limiter refused before
# doing any work with this key: the caller may retry it elsewhere and must not blame the instance.
SHED = "x-boutique-shed"


def failed_dependency_path(exc: BaseException) -> str:
    """The failed-dependency path an exception carries ('' when the failure is the process's own).

    Duck-typed: any exception with a `dependency_path` (a tuple of names, nearest first) or a
    `dependency` name qualifies, so the shop's errors and the mesh's own need no common base.
    """
    path = getattr(exc, "dependency_path", None)
    if path:
        return "/".join(str(part) for part in path)
    name = getattr(exc, "dependency", None)
    return str(name) if name else ""
