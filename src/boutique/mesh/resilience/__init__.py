"""Resilience primitives of the mesh, pure logic: circuit breaker, retry budget, bulkhead, backoff and the
adaptive concurrency limiter."""

from boutique.mesh.resilience.backoff import full_jitter
from boutique.mesh.resilience.breaker import (
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    Permit,
    Transition,
)
from boutique.mesh.resilience.budget import RetryBudget
from boutique.mesh.resilience.bulkhead import Bulkhead, BulkheadFullError, BulkheadSlot
from boutique.mesh.resilience.limiter import (
    ConcurrencyLimiter,
    FixedLimit,
    GradientLimit,
    Limit,
    LimiterSettings,
)
from boutique.mesh.resilience.windows import CountWindow, OutcomeWindow, TimeWindow

__all__ = [
    "BreakerConfig",
    "BreakerOpenError",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadSlot",
    "CircuitBreaker",
    "ConcurrencyLimiter",
    "CountWindow",
    "FixedLimit",
    "GradientLimit",
    "Limit",
    "LimiterSettings",
    "OutcomeWindow",
    "Permit",
    "RetryBudget",
    "TimeWindow",
    "Transition",
    "full_jitter",
]
