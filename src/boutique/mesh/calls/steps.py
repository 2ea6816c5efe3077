"""The steps of one call, each a small function of what it is given, so each can be read and tested alone.

1. `pick` an endpoint the call has not tried; 2. `take_permit` from the breaker; 3. `attempt` under what
is left of the deadline; 4. `note_failure`: the status a failed attempt ended with, and its `Outcome`;
5. `may_retry` and `backoff_delay`. At the end `settle` finishes the breaker's permit of a failed call
and `outcome_label` names how the call is counted. `Dependency` runs them in that order, the same
way for the first attempt and every retry.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from boutique.mesh.balancing import Balancer, Endpoint, NoEndpointError
from boutique.mesh.calls.call import Call
from boutique.mesh.calls.outcome import FAULTS, RETRYABLE, CallStatus, Code, Outcome, classify
from boutique.mesh.errors import CircuitOpen, NoInstances
from boutique.mesh.instance import Instance
from boutique.mesh.resilience import BreakerOpenError, CircuitBreaker, Permit, full_jitter

Conn = TypeVar("Conn")
T = TypeVar("T")

# A retry needs at least this much of the deadline left (seconds) to have a chance of answering.
MIN_TIME_TO_RETRY = 0.005

# The `outcome` label of the client call metrics for a call that failed with each outcome.
LABELS = {Outcome.CALLER_ERROR: "ok", Outcome.OVERLOADED: "overloaded", Outcome.UPSTREAM: "dependency_error"}


def pick(
    balancer: Balancer, conns: Mapping[str, tuple[Instance, Conn]], call: Call[Conn, Any], name: str
) -> tuple[Endpoint, Conn]:
    """Step 1: the endpoint for the next attempt (one not tried yet, when any) and its connection.

    NoInstances when there is none. On a retry the last attempt's own error is raised instead: a
    caller must not take "no instance" to mean its call never reached one (the first may have, and acted).
    """
    try:
        endpoint = balancer.pick(call.tried)
    except NoEndpointError:
        raise _nothing_to_pick(call, f"no live instance of {name}", name) from None
    instance_id = endpoint.instance.id
    pair = conns.get(instance_id)
    if pair is None:  # membership changed between the balancer's update and here
        raise _nothing_to_pick(call, f"instance {instance_id} of {name} just left", name) from None
    call.number += 1
    return endpoint, pair[1]


def _nothing_to_pick(call: Call[Any, Any], message: str, name: str) -> Exception:
    """The error when no endpoint is left: the last attempt's own on a retry, else NoInstances."""
    return call.error if call.error is not None else NoInstances(message, name)


def take_permit(breaker: CircuitBreaker | None, name: str) -> Permit | None:
    """Step 2: the breaker's leave to make this call (None without a breaker); CircuitOpen when refused."""
    if breaker is None:
        return None
    try:
        return breaker.acquire()
    except BreakerOpenError as exc:
        raise CircuitOpen(f"{name}: circuit open ({exc})", name) from exc


def attempt(
    call: Call[Conn, T], endpoint: Endpoint, conn: Conn, per_try: float | None, now: float
) -> Awaitable[T]:
    """Step 3: start one attempt at `now` on the endpoint's connection (await it), counted in flight on it.

    Its timeout is what is left of the call's deadline, capped by the per-try timeout, never below 0. A
    fault the flag file injects (`call.fault`) acts here, on each attempt, as the network or the callee would.
    """
    call.started = now
    endpoint.on_start()
    left = call.ends - now
    if per_try and per_try < left:
        left = per_try
    if left < 0.0:
        left = 0.0
    if call.fault is not None:
        return call.fault.attempt(call.attempt, conn, left, endpoint.instance)
    return call.attempt(conn, left)


def note_failure(call: Call[Any, Any], endpoint: Endpoint, exc: Exception) -> Outcome:
    """Step 4: the status a failed attempt ended with and how it counts, kept on the call as its last error.

    The endpoint joins the call's tried instances, which a retry avoids.
    """
    call.tried = (*call.tried, endpoint.id)
    call.error = exc
    call.status = status = call.status_of(exc)
    call.outcome = outcome = classify(status)
    return outcome


def may_retry(call: Call[Any, Any], outcome: Outcome, max_attempts: int, now: float) -> bool:
    """Step 5: whether another attempt is allowed (the retry budget is asked last, by the caller).

    Only a call safe to repeat, after an outcome another instance may answer better, with attempts
    and time left.
    """
    return (
        call.retryable
        and outcome in RETRYABLE
        and call.number < max_attempts
        and call.ends - now > MIN_TIME_TO_RETRY
    )


def backoff_delay(
    call: Call[Any, Any], base: float, cap: float, now: float, rng: Callable[[], float] = random.random
) -> float:
    """Step 5: the wait before the next attempt: full jitter growing with the attempts made, within the deadline."""
    delay = full_jitter(call.number - 1, base, cap, rng)
    left = call.ends - now
    return delay if delay < left else max(0.0, left)


def final_outcome(call: Call[Any, Any], exc: BaseException) -> Outcome | None:
    """How the call that ended with `exc` counts (None when it was cancelled), kept on the call."""
    if exc is not call.error:  # not an attempt's error: the mesh's own refusal, or a cancellation
        if isinstance(exc, Exception):
            call.status = call.status_of(exc)
            call.outcome = classify(call.status)
        else:
            call.status = call.outcome = None
    return call.outcome


def settle(permit: Permit, outcome: Outcome | None, status: CallStatus | None, duration: float) -> None:
    """Finish a failed call's breaker permit: a fault counts (a timeout as one), anything else is ignored."""
    if outcome in FAULTS:
        permit.failure(duration, timeout=status is not None and status.code is Code.DEADLINE_EXCEEDED)
    else:
        permit.ignore()


def outcome_label(exc: BaseException, outcome: Outcome | None) -> str:
    """The `outcome` label a failed call is counted under in the client call metrics."""
    if isinstance(exc, CircuitOpen):
        return "short_circuited"
    if isinstance(exc, NoInstances):
        return "no_instances"
    return LABELS.get(outcome, "error") if outcome is not None else "error"
