"""How calls to a dependency behave (`CallPolicy`), and the state one call carries through its steps (`Call`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from opentelemetry import trace

from boutique.mesh.calls.outcome import CallStatus, Outcome
from boutique.mesh.resilience import BreakerConfig

if TYPE_CHECKING:
    from boutique.mesh.faults import CallFault

Conn = TypeVar("Conn")
T = TypeVar("T")


@dataclass(frozen=True)
class CallPolicy:
    """How calls to one dependency behave; defaults follow MESH.md."""

    timeout: float = 3.0
    per_try_timeout: float | None = None
    max_attempts: int = 3
    balancer: str = "least_request"
    breaker: BreakerConfig | None = field(default_factory=BreakerConfig)
    max_concurrent: int | None = 256
    backoff_base: float = 0.025
    backoff_cap: float = 0.25
    resolve_wait: float = 5.0


@dataclass(slots=True, eq=False)
class Call(Generic[Conn, T]):
    """One logical call in flight: what to send and how, its deadline, and where its attempts went.

    `attempt(conn, timeout)` makes one attempt on an instance's connection; `status_of(exc)` says what a
    failed one ended with. The steps of the pipeline read and update the rest.
    """

    method: str
    attempt: Callable[[Conn, float], Awaitable[T]]
    status_of: Callable[[Exception], CallStatus]
    retryable: bool  # safe to send again (idempotent)
    timeout: float | None = None  # the caller's own bound; the policy's when None
    span: trace.Span = trace.INVALID_SPAN  # the call's span while it records (else the no-op INVALID_SPAN)
    began: float = 0.0  # monotonic clock when the call started
    ends: float = 0.0  # monotonic clock when its deadline runs out
    started: float = 0.0  # monotonic clock when the current attempt started
    number: int = 0  # attempts made so far (the current one included)
    tried: tuple[str, ...] = ()  # the instances whose attempts failed, in order (a retry avoids them)
    error: Exception | None = None  # the last failed attempt's error
    status: CallStatus | None = None  # ... what it ended with
    outcome: Outcome | None = None  # ... and how it counts (at the end: how the whole call counts)
    fault: CallFault | None = None  # what the flag file injects into every attempt (mesh.faults)
