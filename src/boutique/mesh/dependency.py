"""One dependency called by name: discovery → balancer → bulkhead → breaker → deadline → retries.

The transport is pluggable: a `Connector` opens a connection object per instance (a gRPC channel and
stub, or an HTTP base URL), the caller's `attempt` function uses it, and its `status_of` function says
what a failed attempt ended with, as a gRPC status. Everything else — which instance, whether to try
again, when to fail fast — is decided here, identically for gRPC and HTTP, by the steps of
`boutique.mesh.calls.steps`, run in the same order for the first attempt and every retry.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from time import monotonic
from typing import Any, Generic, TypeVar

from opentelemetry import trace

from boutique.mesh import deadline, metrics
from boutique.mesh.balancing import Endpoint, OutlierDetector, make_balancer
from boutique.mesh.calls.call import Call, CallPolicy
from boutique.mesh.calls.membership import Connector, Membership
from boutique.mesh.calls.outcome import FAULTS, CallStatus, Code, Outcome
from boutique.mesh.calls.recovery import RecoveryProbe
from boutique.mesh.calls.stats import CallMetrics
from boutique.mesh.calls.steps import (
    attempt,
    backoff_delay,
    final_outcome,
    may_retry,
    note_failure,
    outcome_label,
    pick,
    settle,
    take_permit,
)
from boutique.mesh.discovery import Resolver
from boutique.mesh.errors import BulkheadFull, CircuitOpen, InjectedFault
from boutique.mesh.faults import call_fault
from boutique.mesh.instance import Instance
from boutique.mesh.resilience import Bulkhead, BulkheadFullError, CircuitBreaker, Permit, RetryBudget
from boutique.mesh.tracing import tracing_on

__all__ = ["CallPolicy", "CallStatus", "Connector", "Dependency", "Outcome"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("boutique.mesh")

Conn = TypeVar("Conn")
T = TypeVar("T")

STATE_VALUES = {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2, "FORCED_OPEN": 3, "DISABLED": 4}
_NO_SPAN = trace.INVALID_SPAN  # the no-op span of a call not traced (or whose span does not record)


class Dependency(Generic[Conn]):
    """Calls to one named dependency, with its live instance set and resilience state."""

    def __init__(
        self,
        name: str,
        resolver: Resolver,
        connector: Connector[Conn],
        policy: CallPolicy | None = None,
        caller: str = "",
    ) -> None:
        self.name = name
        self.caller = caller
        self.resolver = resolver
        self.connector = connector
        self.policy = policy or CallPolicy()
        self.detector = OutlierDetector(on_event=self._on_outlier)
        self.balancer = make_balancer(self.policy.balancer, detector=self.detector)
        self.membership = Membership(name, resolver, connector, self.balancer)
        self._conns = self.membership.conns  # the same dict, read on every call
        self.breaker = (
            CircuitBreaker(f"{caller}->{name}" if caller else name, self.policy.breaker, group=name)
            if self.policy.breaker is not None
            else None
        )
        self.recovery: RecoveryProbe[Conn] | None = None
        if self.breaker is not None:
            probe = getattr(connector, "probe", None)
            if probe is not None:
                self.recovery = RecoveryProbe(name, self.breaker, self.connections, probe)
            self.breaker.on_transition(self._on_transition)
            metrics.BREAKER_STATE.labels(self.breaker.name).set(0)
        self.bulkhead = Bulkhead(self.policy.max_concurrent) if self.policy.max_concurrent else None
        self.budget = RetryBudget()
        self.stats = CallMetrics(name)
        self.on_closed: Callable[[], None] | None = None

    # ---- membership -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin watching discovery (idempotent; called lazily by the first call)."""
        self.membership.start()

    def update(self, instances: Sequence[Instance]) -> None:
        """Apply a new instance set: open connections to newcomers, retire the departed after their calls end."""
        self.membership.update(instances)

    def connections(self) -> list[Conn]:
        """The open per-instance connections (channels and stubs for gRPC)."""
        return self.membership.connections()

    @property
    def instances(self) -> list[Instance]:
        """The instances calls may go to now."""
        return self.membership.instances

    async def start_and_wait(self, timeout: float = 5.0) -> list[Instance]:
        """Start discovery and wait for its first answer; returns the instances (possibly none)."""
        await self.membership.first_instances(min(timeout, self.policy.resolve_wait))
        return self.instances

    # ---- events -----------------------------------------------------------------------------

    def _on_transition(self, breaker: str, old: Any, new: Any) -> None:
        """A breaker state change: probe for recovery while OPEN, and count, gauge and trace the change."""
        old_name, new_name = getattr(old, "name", str(old)), getattr(new, "name", str(new))
        if new_name == "OPEN" and self.recovery is not None:
            self.recovery.start()
        metrics.BREAKER_STATE.labels(breaker).set(STATE_VALUES.get(new_name, -1))
        metrics.BREAKER_TRANSITIONS.labels(breaker, old_name, new_name).inc()
        trace.get_current_span().add_event(
            "breaker_transition", {"mesh.breaker": breaker, "from": old_name, "to": new_name}
        )

    def _on_outlier(self, kind: str, endpoint: Endpoint) -> None:
        """An instance ejected or returned by outlier detection: count, log and trace it."""
        if kind == "ejected":
            metrics.EJECTIONS.labels(self.name).inc()
        log.warning(
            "instance %s", kind, extra={"dependency": self.name, "peer_instance": endpoint.instance.id}
        )
        trace.get_current_span().add_event(f"instance_{kind}", {"mesh.instance": endpoint.instance.id})

    # ---- calls ------------------------------------------------------------------------------

    def invoke(
        self,
        method: str,
        attempt: Callable[[Conn, float], Awaitable[T]],
        status_of: Callable[[Exception], CallStatus],
        *,
        retryable: bool,
        timeout: float | None = None,
        fallback: Callable[[BaseException], T | Awaitable[T]] | None = None,
    ) -> Coroutine[Any, Any, T]:
        """Run one logical call: pick, call, retry elsewhere if `retryable`; `fallback` answers for a failed one.

        `attempt(conn, timeout)` makes one attempt; `status_of(exc)` says what a failed one ended with.
        Returns the call's coroutine (await it). The fallback is used when the dependency fails
        (short-circuited, no instance, bulkhead full, transient or server failure) — never for the
        caller's own errors such as INVALID_ARGUMENT.
        """
        call = Call(method, attempt, status_of, retryable, timeout)
        if fallback is not None:
            return self._run_or_fall_back(call, fallback)
        if tracing_on():
            return self._traced(call)
        # No wrapper coroutine and no span: one frame less on every resumption of the call.
        return self._run(call)

    async def _run_or_fall_back(
        self, call: Call[Conn, T], fallback: Callable[[BaseException], T | Awaitable[T]]
    ) -> T:
        """The call, answered by `fallback` when the dependency (not the request) is at fault."""
        try:
            if tracing_on():
                return await self._traced(call)
            return await self._run(call)
        except Exception as exc:
            if call.outcome is Outcome.CALLER_ERROR:
                raise
            return await self._fall_back(fallback, exc)

    async def _fall_back(self, fallback: Callable[[BaseException], T | Awaitable[T]], exc: Exception) -> T:
        """Serve the fallback, counting it in metrics, the breaker's statistics and the span."""
        self.stats.fell_back()
        trace.get_current_span().add_event(
            "fallback", {"mesh.dependency": self.name, "mesh.reason": str(exc)[:200]}
        )
        try:
            value = fallback(exc)
            if inspect.isawaitable(value):
                value = await value
        except Exception:
            if self.breaker is not None:
                self.breaker.record_fallback(ok=False)
            raise
        if self.breaker is not None:
            self.breaker.record_fallback(ok=True)
        log.info("fallback served", extra={"dependency": self.name, "reason": str(exc)[:200]})
        return value  # type: ignore[return-value]

    async def _traced(self, call: Call[Conn, T]) -> T:
        """The call inside a span of its own, made current (an OpenTelemetry SDK is installed)."""
        with tracer.start_as_current_span(
            self.span_name(call.method),
            kind=self.span_kind,
            attributes=self.span_attributes(call.method),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            # Attributes on a span that does not record are dropped: the call then sets none.
            if span.is_recording():
                call.span = span
                span.set_attribute("mesh.dependency", self.name)
            try:
                result = await self._run(call)
            except BaseException as exc:
                self.describe_failure(span, exc)
                raise
            self.describe_success(span)
            return result

    async def _run(self, call: Call[Conn, T]) -> T:
        """The pipeline: bulkhead, breaker permit, then pick → attempt → classify → retry? until it ends.

        Every attempt, the first as much as the retries, goes through the same steps (calls.steps); the
        breaker and the metrics see the logical call once, however many attempts it took.
        """
        call.began = now = began = monotonic()
        call.ends = began + deadline.bound(call.timeout or self.policy.timeout, began)
        bulkhead = self.bulkhead
        if bulkhead is not None:
            try:
                bulkhead.enter()
            except BulkheadFullError as exc:
                raise self._bulkhead_full(call, exc) from exc
        permit: Permit | None = None
        ended: float | None = None
        label = "error"
        try:
            permit = take_permit(self.breaker, self.name)
            if not self.membership.ready:
                await self.membership.first_instances(min(call.ends - began, self.policy.resolve_wait))
                now = monotonic()
            self.budget.record_request()
            call.fault = call_fault(self.caller, self.name, call.method, self.injected_error)
            while True:
                endpoint, conn = pick(self.balancer, self._conns, call, self.name)
                if call.span is not _NO_SPAN:
                    self._describe_attempt(call.span, endpoint, call.number)
                try:
                    result = await attempt(call, endpoint, conn, self.policy.per_try_timeout, now)
                except Exception as exc:
                    outcome = self._failed(call, endpoint, exc)
                    if not self._should_retry(call, outcome):
                        raise
                    await asyncio.sleep(self._backoff(call, endpoint))
                    now = monotonic()
                    continue
                except BaseException:  # cancelled: not the instance's fault
                    self._report(endpoint, call, True)
                    raise
                ended = monotonic()
                self.balancer.report(endpoint, True, ended - call.started, ended)
                break
            if permit is not None:
                permit.success(ended - began)
            label = "ok"
            return result
        except BaseException as exc:
            label = self._ended_in_failure(call, permit, exc)
            raise
        finally:
            if bulkhead is not None:
                bulkhead.leave()
            self.stats.finished(call.method, label, (monotonic() if ended is None else ended) - began)

    # ---- the pipeline's steps, bound to this dependency's state ---------------------------------

    def _bulkhead_full(self, call: Call[Conn, Any], exc: BulkheadFullError) -> BulkheadFull:
        """Count a call the full bulkhead refused; the error to refuse it with."""
        self.stats.finished(call.method, "bulkhead_full")
        return BulkheadFull(f"{self.name}: {exc}", self.name)

    def _describe_attempt(self, span: trace.Span, endpoint: Endpoint, number: int) -> None:
        """The instance an attempt went to, and the breaker's state, on the call's span."""
        instance = endpoint.instance
        span.set_attributes(
            {
                "mesh.instance": instance.id,
                "mesh.attempt": number,
                "server.address": instance.host,
                "server.port": instance.ports.get(self.connector.port_name, 0),
            }
        )
        if self.breaker is not None:
            span.set_attribute("mesh.breaker.state", self.breaker.state.name)

    def _report(self, endpoint: Endpoint, call: Call[Conn, Any], healthy: bool) -> None:
        """Tell the balancer (and its outlier detection) how the current attempt went."""
        now = monotonic()
        self.balancer.report(endpoint, healthy, now - call.started, now)

    def _failed(self, call: Call[Conn, Any], endpoint: Endpoint, exc: Exception) -> Outcome:
        """A failed attempt (step 4): classify it by status, and blame the instance only for a fault."""
        outcome = note_failure(call, endpoint, exc)
        self._report(endpoint, call, outcome not in FAULTS)
        return outcome

    def _should_retry(self, call: Call[Conn, Any], outcome: Outcome) -> bool:
        """Step 5: whether to try another instance; the retry budget is asked last (and counted when spent)."""
        if not may_retry(call, outcome, self.policy.max_attempts, monotonic()):
            return False
        if self.budget.try_withdraw():
            return True
        self.stats.budget_exhausted()
        return False

    def _backoff(self, call: Call[Conn, Any], endpoint: Endpoint) -> float:
        """Note the retry (span event, metric); the seconds to wait before it."""
        call.span.add_event("retry", {"mesh.attempt": call.number + 1, "mesh.failed_instance": endpoint.id})
        self.stats.retried(call.method)
        policy = self.policy
        return backoff_delay(call, policy.backoff_base, policy.backoff_cap, monotonic())

    def _ended_in_failure(self, call: Call[Conn, Any], permit: Permit | None, exc: BaseException) -> str:
        """Settle a failed call with the breaker; the outcome label it is counted under."""
        outcome = final_outcome(call, exc)
        if isinstance(exc, CircuitOpen):
            call.span.set_attribute("mesh.breaker.state", "OPEN")
        if permit is not None:
            settle(permit, outcome, call.status, monotonic() - call.began)
        return outcome_label(exc, outcome)

    # ---- how a transport names and describes its call spans (overridden per transport) ----------

    span_kind = trace.SpanKind.INTERNAL

    def span_name(self, method: str) -> str:
        """The name of a call's span."""
        return f"mesh {self.name}.{method}"

    def span_attributes(self, method: str) -> dict[str, str]:
        """Attributes a call's span starts with."""
        return {"mesh.dependency": self.name}

    def describe_success(self, span: trace.Span) -> None:
        """Note a successful call on its span."""

    def describe_failure(self, span: trace.Span, exc: BaseException) -> None:
        """Note a failed call on its span: the exception, and ERROR unless it was cancelled."""
        if isinstance(exc, asyncio.CancelledError):
            span.add_event("cancelled")
            return
        span.record_exception(exc)
        span.set_status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {str(exc)[:200]}")

    def injected_error(self, code: Code, message: str, served_by: Instance | None) -> Exception:
        """The error an attempt fails with when the flag file injects `code` (see mesh.faults); a
        transport answers with its own error type, as if the instance `served_by` had answered so."""
        return InjectedFault(code, message)

    # ---- status and shutdown ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """State for the status endpoints: instances with balancer stats, and the breaker."""
        now = monotonic()
        return {
            "dependency": self.name,
            "caller": self.caller,
            "balancer": self.policy.balancer,
            "instances": [
                {
                    "id": e.instance.id,
                    "endpoint": e.instance.endpoint(),
                    "outstanding": e.outstanding,
                    "ejected": e.ejected_until > now,
                    "consecutive_failures": e.consecutive_failures,
                }
                for e in self.balancer.endpoints
            ],
            "breaker": self.breaker.snapshot() if self.breaker else None,
        }

    async def close(self) -> None:
        """Stop watching and probing, and close every connection."""
        if self.recovery is not None:
            await self.recovery.stop()
        await self.membership.close()
        if self.on_closed is not None:
            self.on_closed()
