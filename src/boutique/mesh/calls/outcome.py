"""How a failed attempt counts, decided by its status code alone: the pipeline's one table.

A transport turns its exception into a `CallStatus` (a gRPC status code, and whether the callee named a
failed dependency of its own); `classify` maps that to an `Outcome`, which says whether to retry, whom
to blame (the instance, the dependency, neither) and whether a fallback may answer.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import grpc

from boutique.mesh.errors import InjectedFault, MeshUnavailable

Code = grpc.StatusCode


class Outcome(enum.Enum):
    """How a failed attempt counts."""

    TRANSIENT = "transient"  # the instance did not answer usefully: eject-worthy, retryable if safe
    FAILURE = "failure"  # the instance answered with a server fault: counts against it, not retried
    CALLER_ERROR = "caller_error"  # the request was at fault: a healthy answer as far as the mesh cares
    # The callee answered that one of its own dependencies failed: the callee is healthy (its breaker
    # and outlier detection do not count it), a retry elsewhere would meet the same dependency, and a
    # fallback may answer instead.
    UPSTREAM = "upstream"
    # The instance refused the call over its load (RESOURCE_EXHAUSTED): retryable elsewhere if safe, but
    # no failure of the instance (no ejection) nor of the dependency (breaker), which would cut capacity.
    OVERLOADED = "overloaded"


class CallStatus(NamedTuple):
    """What a failed attempt ended with, in the transport-neutral terms of gRPC."""

    code: grpc.StatusCode
    # Whether the callee answered that a dependency of its own failed (errors.FAILED_DEPENDENCY).
    upstream: bool = False


# The one table: every gRPC status code and how a failed attempt that ended with it counts.
OUTCOMES: dict[grpc.StatusCode, Outcome] = {
    Code.OK: Outcome.CALLER_ERROR,  # never an error in practice; listed so the table is complete
    Code.CANCELLED: Outcome.CALLER_ERROR,
    Code.UNKNOWN: Outcome.FAILURE,
    Code.INVALID_ARGUMENT: Outcome.CALLER_ERROR,
    Code.DEADLINE_EXCEEDED: Outcome.TRANSIENT,
    Code.NOT_FOUND: Outcome.CALLER_ERROR,
    Code.ALREADY_EXISTS: Outcome.CALLER_ERROR,
    Code.PERMISSION_DENIED: Outcome.CALLER_ERROR,
    Code.RESOURCE_EXHAUSTED: Outcome.OVERLOADED,  # e.g. shed by the callee's concurrency limiter
    Code.FAILED_PRECONDITION: Outcome.CALLER_ERROR,
    Code.ABORTED: Outcome.CALLER_ERROR,
    Code.OUT_OF_RANGE: Outcome.CALLER_ERROR,
    Code.UNIMPLEMENTED: Outcome.FAILURE,
    Code.INTERNAL: Outcome.FAILURE,
    Code.UNAVAILABLE: Outcome.TRANSIENT,
    Code.DATA_LOSS: Outcome.FAILURE,
    Code.UNAUTHENTICATED: Outcome.CALLER_ERROR,
}

# Outcomes that count against the instance (outlier detection) and the dependency (its breaker).
FAULTS = frozenset({Outcome.TRANSIENT, Outcome.FAILURE})
# Outcomes another instance may answer better: retried when the call is safe to repeat.
RETRYABLE = frozenset({Outcome.TRANSIENT, Outcome.OVERLOADED})


def classify(status: CallStatus) -> Outcome:
    """How a failed attempt counts: UPSTREAM when the callee blamed a dependency of its own, else the table's."""
    if status.upstream:
        return Outcome.UPSTREAM
    return OUTCOMES[status.code]


UNAVAILABLE = CallStatus(Code.UNAVAILABLE)
DEADLINE_EXCEEDED = CallStatus(Code.DEADLINE_EXCEEDED)
UNKNOWN = CallStatus(Code.UNKNOWN)


def status_of_error(exc: BaseException) -> CallStatus:
    """The status of an error no transport answered with: the mesh's own refusals and the network's.

    The mesh refused to send (no instance, breaker open, bulkhead full) or the connection failed:
    UNAVAILABLE; a timeout: DEADLINE_EXCEEDED; an injected fault: its own; anything else is a fault of
    unknown kind.
    """
    if isinstance(exc, InjectedFault):
        return CallStatus(exc.grpc_code)
    if isinstance(exc, TimeoutError):  # before OSError, of which it is a subclass
        return DEADLINE_EXCEEDED
    if isinstance(exc, MeshUnavailable | OSError):
        return UNAVAILABLE
    return UNKNOWN
