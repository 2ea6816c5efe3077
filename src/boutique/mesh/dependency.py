"""One dependency called by name: discovery → balancer → bulkhead → breaker → deadline → retries.

The transport is pluggable: a `Connector` opens a connection object per instance (a gRPC channel and
stub, or an HTTP base URL) and the caller's `attempt` function uses it. Everything else — which instance,
whether to try again, when to fail fast — is decided here, identically for gRPC and HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry import trace

from boutique.mesh import deadline, metrics
from boutique.mesh.balancing import Endpoint, NoEndpointError, OutlierDetector, make_balancer
from boutique.mesh.discovery import Resolver
from boutique.mesh.errors import BulkheadFull, CircuitOpen, MeshUnavailable, NoInstances
from boutique.mesh.instance import Instance
from boutique.mesh.resilience import (
    BreakerConfig,
    BreakerOpenError,
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    RetryBudget,
    full_jitter,
)
from boutique.mesh.tracing import tracing_on

log = logging.getLogger(__name__)
tracer = trace.get_tracer("boutique.mesh")

Conn = TypeVar("Conn")
T = TypeVar("T")

# While a breaker is open, how often its dependency's instances are health-checked (and how long a
# check may take): a dependency that returns is used again within about this long.
RECOVERY_PROBE_EVERY = 0.25

STATE_VALUES = {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2, "FORCED_OPEN": 3, "DISABLED": 4}


# Without an OpenTelemetry SDK no span records anything, so a call skips making one (and the context
# switch) altogether and works on `trace.INVALID_SPAN`, on which every operation is a no-op.


def _is_timeout(exc: BaseException) -> bool:
    """A deadline ran out: Python's TimeoutError or a gRPC DEADLINE_EXCEEDED (duck-typed, any transport)."""
    if isinstance(exc, TimeoutError) or type(exc).__name__.endswith("TimeoutException"):
        return True
    code = getattr(exc, "code", None)
    return callable(code) and getattr(code(), "name", "") == "DEADLINE_EXCEEDED"


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


class Connector(Protocol[Conn]):
    """Opens and closes the per-instance connection object of a transport."""

    port_name: str  # which of an instance's named ports it connects to ("grpc", "http")

    def open(self, instance: Instance) -> Conn:
        """A connection to the instance."""
        ...

    async def close(self, conn: Conn) -> None:
        """Release the connection."""
        ...


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
        self.breaker = (
            CircuitBreaker(f"{caller}->{name}" if caller else name, self.policy.breaker, group=name)
            if self.policy.breaker is not None
            else None
        )
        if self.breaker is not None:
            self.breaker.on_transition(self._on_transition)
            metrics.BREAKER_STATE.labels(self.breaker.name).set(0)
        self.bulkhead = Bulkhead(self.policy.max_concurrent) if self.policy.max_concurrent else None
        self.budget = RetryBudget()
        self._conns: dict[str, tuple[Instance, Conn]] = {}
        self._resolved = asyncio.Event()
        self._ready = False
        self._watch_task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._probe_task: asyncio.Task[None] | None = None
        self.on_closed: Callable[[], None] | None = None
        # Updaters of Prometheus children by label values: `metric.labels(...)` costs more than the update.
        self._call_counters: dict[tuple[str, str], Callable[[], None]] = {}
        self._latency_histograms: dict[str, Callable[[float], None]] = {}

    # ---- membership -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin watching discovery (idempotent; called lazily by the first call)."""
        if self._watch_task is None:
            # A context of its own: started by some call, it must not log or trace as part of that call.
            self._watch_task = asyncio.create_task(
                self._watch(), name=f"mesh-watch-{self.name}", context=contextvars.Context()
            )

    async def _watch(self) -> None:
        try:
            async for instances in self.resolver.watch(self.name):
                self.update(instances)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discovery watch ended", extra={"dependency": self.name})

    def update(self, instances: Sequence[Instance]) -> None:
        """Apply a new instance set: open connections to newcomers, retire the departed after their calls end."""
        current = {i.id: i for i in instances}
        for instance_id in list(self._conns):
            old, conn = self._conns[instance_id]
            if instance_id not in current or current[instance_id].endpoint() != old.endpoint():
                del self._conns[instance_id]
                self._retire(old, conn)
        for instance in instances:
            if instance.id not in self._conns:
                self._conns[instance.id] = (instance, self.connector.open(instance))
        self.balancer.update(list(instances))
        metrics.INSTANCES.labels(self.name).set(len(instances))
        metrics.DISCOVERY_UPDATES.labels(self.name).inc()
        self._resolved.set()
        self._ready = True  # `_resolved.is_set()` as a plain attribute, read on every call
        log.info("instances", extra={"dependency": self.name, "instances": sorted(current)})

    def _retire(self, instance: Instance, conn: Conn) -> None:
        endpoint = next((e for e in self.balancer.endpoints if e.instance.id == instance.id), None)

        async def close_when_idle() -> None:
            try:
                for _ in range(300):  # up to 30 s for in-flight calls to finish
                    if endpoint is None or endpoint.outstanding <= 0:
                        break
                    await asyncio.sleep(0.1)
            finally:  # also when close() cuts the wait short: the connection is released either way
                await self.connector.close(conn)

        task = asyncio.create_task(close_when_idle(), context=contextvars.Context())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def connections(self) -> list[Conn]:
        """The open per-instance connections (channels and stubs for gRPC)."""
        return [conn for _, conn in self._conns.values()]

    @property
    def instances(self) -> list[Instance]:
        """The instances calls may go to now."""
        return [instance for instance, _ in self._conns.values()]

    # ---- events -----------------------------------------------------------------------------

    def _on_transition(self, breaker: str, old: Any, new: Any) -> None:
        old_name, new_name = getattr(old, "name", str(old)), getattr(new, "name", str(new))
        if new_name == "OPEN":
            self._start_recovery_probe()
        metrics.BREAKER_STATE.labels(breaker).set(STATE_VALUES.get(new_name, -1))
        metrics.BREAKER_TRANSITIONS.labels(breaker, old_name, new_name).inc()
        trace.get_current_span().add_event(
            "breaker_transition", {"mesh.breaker": breaker, "from": old_name, "to": new_name}
        )

    def _start_recovery_probe(self) -> None:
        """While the breaker is open, health-check the instances so a recovered dependency is used at once."""
        probe = getattr(self.connector, "probe", None)
        if probe is None or (self._probe_task is not None and not self._probe_task.done()):
            return
        try:
            self._probe_task = asyncio.get_running_loop().create_task(
                self._probe_while_open(probe), context=contextvars.Context()
            )
        except RuntimeError:  # no event loop (a breaker tripped from another thread): waits run out instead
            self._probe_task = None

    async def _probe_while_open(self, probe: Callable[[Conn, float], Awaitable[bool]]) -> None:
        """Every RECOVERY_PROBE_EVERY seconds, until the breaker leaves OPEN or a probe finds one serving."""
        breaker = self.breaker
        while breaker is not None and breaker.state.name == "OPEN":
            await asyncio.sleep(RECOVERY_PROBE_EVERY)
            conns = self.connections()
            answers = await asyncio.gather(
                *(probe(conn, RECOVERY_PROBE_EVERY) for conn in conns), return_exceptions=True
            )
            if any(answer is True for answer in answers):
                if breaker.probe_succeeded():
                    log.info("dependency answers health checks again", extra={"dependency": self.name})
                return

    def _on_outlier(self, kind: str, endpoint: Endpoint) -> None:
        if kind == "ejected":
            metrics.EJECTIONS.labels(self.name).inc()
        log.warning("instance %s", kind, extra={"dependency": self.name, "instance": endpoint.instance.id})
        trace.get_current_span().add_event(f"instance_{kind}", {"mesh.instance": endpoint.instance.id})

    # ---- calls ------------------------------------------------------------------------------

    def _count_call(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """Count a finished call by outcome and, when `seconds` is given, observe its latency."""
        count = self._call_counters.get((method, outcome))
        if count is None:
            count = self._call_counters[method, outcome] = metrics.CLIENT_STATS.count(
                self.name, method, outcome
            ).inc
        count()
        if seconds is None:
            return
        observe = self._latency_histograms.get(method)
        if observe is None:
            observe = self._latency_histograms[method] = metrics.CLIENT_STATS.latency(
                self.name, method
            ).observe
        observe(seconds)

    async def start_and_wait(self, timeout: float = 5.0) -> list[Instance]:
        """Start discovery and wait for its first answer; returns the instances (possibly none)."""
        await self._first_instances(timeout)
        return self.instances

    async def _first_instances(self, budget: float) -> None:
        if not self._resolved.is_set():
            self.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resolved.wait(), min(budget, self.policy.resolve_wait))

    def invoke(
        self,
        method: str,
        attempt: Callable[[Conn, float], Awaitable[T]],
        classify: Callable[[BaseException], Outcome],
        *,
        retryable: bool,
        timeout: float | None = None,
        fallback: Callable[[BaseException], T | Awaitable[T]] | None = None,
    ) -> Coroutine[Any, Any, T]:
        """Run one logical call: pick, call, retry elsewhere if `retryable`; `fallback` answers for a failed one.

        Returns the call's coroutine (await it). The fallback is used when the dependency fails
        (short-circuited, no instance, bulkhead full, transient or server failure) — never for the
        caller's own errors such as INVALID_ARGUMENT.
        """
        if fallback is not None:
            return self._invoke_or_fall_back(method, attempt, classify, retryable, timeout, fallback)
        if tracing_on():
            return self._traced(method, attempt, classify, retryable, timeout)
        # No wrapper coroutine and no span: one frame less on every resumption of the call.
        return self._invoke(method, attempt, classify, retryable, timeout, trace.INVALID_SPAN)

    async def _invoke_or_fall_back(
        self,
        method: str,
        attempt: Callable[[Conn, float], Awaitable[T]],
        classify: Callable[[BaseException], Outcome],
        retryable: bool,
        timeout: float | None,
        fallback: Callable[[BaseException], T | Awaitable[T]],
    ) -> T:
        """The call, answered by `fallback` when the dependency (not the request) is at fault."""
        try:
            if tracing_on():
                return await self._traced(method, attempt, classify, retryable, timeout)
            return await self._invoke(method, attempt, classify, retryable, timeout, trace.INVALID_SPAN)
        except Exception as exc:
            if not isinstance(exc, MeshUnavailable) and classify(exc) is Outcome.CALLER_ERROR:
                raise
            return await self._fall_back(fallback, exc)

    async def _fall_back(self, fallback: Callable[[BaseException], T | Awaitable[T]], exc: Exception) -> T:
        """Serve the fallback, counting it in metrics, the breaker's statistics and the span."""
        metrics.FALLBACKS.labels(self.name).inc()
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

    async def _traced(
        self,
        method: str,
        attempt: Callable[[Conn, float], Awaitable[T]],
        classify: Callable[[BaseException], Outcome],
        retryable: bool,
        timeout: float | None,
    ) -> T:
        """The call inside a span of its own, made current (an OpenTelemetry SDK is installed)."""
        with tracer.start_as_current_span(
            self.span_name(method),
            kind=self.span_kind,
            attributes=self.span_attributes(method),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self._invoke(method, attempt, classify, retryable, timeout, span)
            except BaseException as exc:
                self.describe_failure(span, exc)
                raise
            self.describe_success(span)
            return result

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

    async def _invoke(
        self,
        method: str,
        attempt: Callable[[Conn, float], Awaitable[T]],
        classify: Callable[[BaseException], Outcome],
        retryable: bool,
        timeout: float | None,
        span: trace.Span,
    ) -> T:
        began = time.monotonic()  # the one clock reading the admission steps share
        ends = began + deadline.bound(timeout or self.policy.timeout, began)
        outcome = "error"
        ended: float | None = None
        # Attributes on a non-recording span are dropped: skip them (always so without an SDK).
        recording = span is not trace.INVALID_SPAN and span.is_recording()
        if recording:
            span.set_attribute("mesh.dependency", self.name)
        bulkhead = self.bulkhead
        if bulkhead is not None:
            try:
                bulkhead.enter()
            except BulkheadFullError as exc:
                self._count_call(method, "bulkhead_full")
                raise BulkheadFull(f"{self.name}: {exc}", self.name) from exc
        try:
            breaker = self.breaker
            ticket = 0
            if breaker is not None:
                try:
                    ticket = breaker.enter()
                except BreakerOpenError as exc:
                    outcome = "short_circuited"
                    span.set_attribute("mesh.breaker.state", "OPEN")
                    raise CircuitOpen(f"{self.name}: circuit open ({exc})", self.name) from exc
                if recording:
                    span.set_attribute("mesh.breaker.state", breaker.state.name)
            try:
                started = began
                if not self._ready:
                    await self._first_instances(ends - started)
                    started = time.monotonic()
                self.budget.record_request()
                # The first attempt inline (the common case); `_retries` takes over after a failure.
                tried: list[str] = []
                endpoint, conn = self._pick(tried)
                if recording:
                    self._describe_attempt(span, endpoint, 1)
                per_try = self.policy.per_try_timeout
                left = ends - started
                endpoint.on_start()
                try:
                    result = await attempt(conn, max(0.0, min(left, per_try) if per_try else left))
                    ended = time.monotonic()
                except Exception as exc:
                    await self._after_failure(
                        exc, endpoint, started, 1, classify, retryable, ends, method, span
                    )
                    failed = exc
                except BaseException:
                    now = time.monotonic()
                    self.balancer.report(endpoint, True, now - started, now)  # cancelled: not its fault
                    raise
                if ended is None:
                    result = await self._retries(
                        method, attempt, classify, retryable, ends, span, recording, tried, failed
                    )
                else:
                    self.balancer.report(endpoint, True, ended - started, ended)
            except BaseException as exc:
                kind = classify(exc) if isinstance(exc, Exception) else None
                if breaker is not None:
                    now = time.monotonic()
                    if kind in (Outcome.TRANSIENT, Outcome.FAILURE) or isinstance(exc, NoInstances):
                        breaker.leave(ticket, True, now - began, timeout=_is_timeout(exc))
                    else:
                        breaker.leave(ticket, None, now - began)
                outcome = "no_instances" if isinstance(exc, NoInstances) else "error"
                if kind is Outcome.CALLER_ERROR:
                    outcome = "ok"
                elif kind is Outcome.OVERLOADED:
                    outcome = "overloaded"
                elif kind is Outcome.UPSTREAM:
                    outcome = "dependency_error"
                raise
            if ended is None:
                ended = time.monotonic()
            if breaker is not None:
                breaker.leave(ticket, False, ended - began)
            outcome = "ok"
            return result
        finally:
            if bulkhead is not None:
                bulkhead.leave()
            self._count_call(method, outcome, (time.monotonic() if ended is None else ended) - began)

    def _describe_attempt(self, span: trace.Span, endpoint: Endpoint, number: int) -> None:
        """The instance an attempt went to, on the call's span."""
        instance = endpoint.instance
        span.set_attributes(
            {
                "mesh.instance": instance.id,
                "mesh.attempt": number,
                "server.address": instance.host,
                "server.port": instance.ports.get(self.connector.port_name, 0),
            }
        )

    def _pick(self, tried: list[str]) -> tuple[Endpoint, Conn]:
        """The endpoint for the next attempt and its connection, noting it in `tried`; NoInstances if none."""
        try:
            endpoint = self.balancer.pick(exclude=tried)
        except NoEndpointError as exc:
            raise NoInstances(f"no live instance of {self.name}", self.name) from exc
        instance_id = endpoint.instance.id
        pair = self._conns.get(instance_id)
        if pair is None:  # membership changed between pick and here
            raise NoInstances(f"instance {instance_id} of {self.name} just left", self.name)
        tried.append(instance_id)
        return endpoint, pair[1]

    async def _after_failure(
        self,
        exc: Exception,
        endpoint: Endpoint,
        started: float,
        number: int,
        classify: Callable[[BaseException], Outcome],
        retryable: bool,
        ends: float,
        method: str,
        span: trace.Span,
    ) -> None:
        """Report a failed attempt; re-raise it unless a retry is due, else wait out the backoff."""
        kind = classify(exc)
        now = time.monotonic()
        healthy = kind is Outcome.CALLER_ERROR or kind is Outcome.OVERLOADED or kind is Outcome.UPSTREAM
        self.balancer.report(endpoint, healthy, now - started, now)
        if not self._should_retry(kind, retryable, number, ends, method):
            raise exc
        delay = full_jitter(number - 1, self.policy.backoff_base, self.policy.backoff_cap)
        span.add_event("retry", {"mesh.attempt": number + 1, "mesh.failed_instance": endpoint.instance.id})
        metrics.RETRIES.labels(self.name, method).inc()
        await asyncio.sleep(min(delay, max(0.0, ends - time.monotonic())))

    async def _retries(
        self,
        method: str,
        attempt: Callable[[Conn, float], Awaitable[T]],
        classify: Callable[[BaseException], Outcome],
        retryable: bool,
        ends: float,
        span: trace.Span,
        recording: bool,
        tried: list[str],
        failed: Exception,
    ) -> T:
        """Attempts after the first failed: other instances until one answers or retrying must stop.

        When no instance is left to retry on, the last attempt's own error is raised: a caller must
        not take "no instance" to mean its call never reached one (the first may have, and acted).
        """
        number = len(tried)
        while True:
            number += 1
            try:
                endpoint, conn = self._pick(tried)
            except NoInstances:
                raise failed from None
            if recording:
                self._describe_attempt(span, endpoint, number)
            started = time.monotonic()
            per_try = self.policy.per_try_timeout
            left = ends - started
            endpoint.on_start()
            try:
                result = await attempt(conn, max(0.0, min(left, per_try) if per_try else left))
            except Exception as exc:
                await self._after_failure(
                    exc, endpoint, started, number, classify, retryable, ends, method, span
                )
                failed = exc
                continue
            except BaseException:
                now = time.monotonic()
                self.balancer.report(
                    endpoint, True, now - started, now
                )  # cancelled: not the instance's fault
                raise
            now = time.monotonic()
            self.balancer.report(endpoint, True, now - started, now)
            return result

    def _should_retry(self, kind: Outcome, retryable: bool, number: int, ends: float, method: str) -> bool:
        if kind not in (Outcome.TRANSIENT, Outcome.OVERLOADED) or not retryable:
            return False
        if number >= self.policy.max_attempts:
            return False
        if ends - time.monotonic() <= 0.005:
            return False
        if not self.budget.try_withdraw():
            metrics.BUDGET_EXHAUSTED.labels(self.name).inc()
            return False
        return True

    # ---- status and shutdown ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """State for the status endpoints: instances with balancer stats, and the breaker."""
        now = time.monotonic()
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
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe_task
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        retiring = list(self._closers)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        for _, conn in self._conns.values():
            await self.connector.close(conn)
        self._conns.clear()
        with contextlib.suppress(Exception):
            await self.resolver.close()
        if self.on_closed is not None:
            self.on_closed()
