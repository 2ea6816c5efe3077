"""A grpc.aio server that every service runs: health, decode errors, served-by, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import propagate, trace

from boutique.mesh.config import ProcessInfo
from boutique.mesh.deadline import deadline_in, from_metadata
from boutique.mesh.errors import SERVED_BY, SHED
from boutique.mesh.failure import Failure, error_trailers, status_details
from boutique.mesh.faults import answer_late
from boutique.mesh.metrics import LIMITER_STATS, SERVER_STATS
from boutique.mesh.presence import Presence
from boutique.mesh.resilience.limiter import ConcurrencyLimiter, LimiterSettings
from boutique.mesh.runtime import Mesh
from boutique.mesh.settings import MeshSettings
from boutique.mesh.stopping import AFTER_SERVING, DEREGISTER_AT_MOST, StopClock, process_stop
from boutique.mesh.tracing import tracing_on
from boutique.signals import stop_on_signals

log = logging.getLogger(__name__)
tracer = trace.get_tracer("boutique.mesh.server")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
READINESS_PERIOD = 0.5  # seconds between asks of a server's readiness probe (Kubernetes' periodSeconds)
# How a registry that checks instances checks one whose readiness can change: its gRPC health, each second.
READINESS_CHECK = {"type": "grpc", "port": "grpc", "interval": 1.0}


@dataclass(frozen=True)
class ServiceBinding:
    """A protobuf service and the object whose async methods (named like the RPCs) implement it."""

    descriptor: ServiceDescriptor
    implementation: object


def _status_of(exc: BaseException) -> grpc.StatusCode | None:
    """A domain error names its gRPC status with a `grpc_code` attribute (duck-typed, no shop import)."""
    code = getattr(exc, "grpc_code", None)
    return code if isinstance(code, grpc.StatusCode) else None


# On a server span only these codes mean the server failed (the semantic conventions' rule); the
# others (NOT_FOUND, INVALID_ARGUMENT, …) are the caller's problem and leave the status unset.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class _Outcome:
    """How one RPC ended: its status code and, for an unexpected failure, the exception."""

    __slots__ = ("code", "error", "unserved")

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK
        self.unserved = False  # refused before the handler ran (expired): its latency says nothing
        self.error: BaseException | None = None


def _unary_handler(
    method: MethodDescriptor,
    impl: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    instance: str,
    limiter: ConcurrencyLimiter | None = None,
) -> grpc.RpcMethodHandler:
    """Wrap one implementation method: its span, its metrics, and bad protobuf as INVALID_ARGUMENT."""
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    served_by = ((SERVED_BY, instance),)
    service = method.containing_service.full_name
    span_name = f"{service}/{method.name}"
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method.name}
    latency = SERVER_STATS.latency(service, method.name).observe
    counters: dict[grpc.StatusCode, Callable[[], None]] = {}  # created on first use: no zero series per code

    async def run(raw: bytes, context: grpc.aio.ServicerContext, outcome: _Outcome) -> Any:
        """Decode, call the implementation, turn its failure into a status (noted in `outcome`)."""
        try:
            request = request_type.FromString(raw)
        except (DecodeError, ValueError) as exc:
            outcome.code = grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(outcome.code, f"malformed {method.input_type.full_name}: {exc}")
        left = _time_left(context)
        if left is not None and left <= 0:  # the caller gave up already: do nothing on its behalf
            outcome.code = grpc.StatusCode.DEADLINE_EXCEEDED
            outcome.unserved = True
            log.warning(
                "call expired before it was served",
                extra={"rpc": method.full_name, "late_ms": round(-left * 1000)},
            )
            await context.abort(
                outcome.code, f"the caller's deadline passed {-left * 1000:.0f} ms before the call was served"
            )
        try:
            with deadline_in(left):
                await answer_late(left)  # grayReplica: this instance answers late when the flag says so
                return await impl(request, context)
        except grpc.aio.AbortError:
            outcome.code = _aborted_code(context)
            raise
        except asyncio.CancelledError:
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = _status_of(exc)
            if code is None:
                log.exception("unhandled error in %s", method.full_name)
                outcome.code, outcome.error = grpc.StatusCode.INTERNAL, exc
                await context.abort(outcome.code, f"internal error in {method.full_name}")
            outcome.code = code
            extra = error_trailers(exc, code, str(exc))  # the failed dependency, the rich error details
            if extra:
                context.set_trailing_metadata((*served_by, *extra))
            await context.abort(code, str(exc))

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        context.set_trailing_metadata(served_by)
        permit = limiter.acquire() if limiter is not None else None
        if permit is None and limiter is not None:
            await _shed(context, limiter, method, served_by)  # over the limit: refused before any work
        outcome = _Outcome()
        started = time.perf_counter()
        try:
            if not tracing_on():
                return await run(raw, context, outcome)
            # Metadata keys arrive lower-cased; one dict makes every propagator's lookups cheap.
            parent = propagate.extract(dict(context.invocation_metadata() or ()))
            with tracer.start_as_current_span(
                span_name,
                context=parent,
                kind=trace.SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await run(raw, context, outcome)
                finally:
                    _describe(span, outcome, context)
        finally:
            if permit is not None:
                permit.release(sample=outcome.code is not grpc.StatusCode.CANCELLED and not outcome.unserved)
            latency(time.perf_counter() - started)
            count = counters.get(outcome.code)
            if count is None:
                count = counters[outcome.code] = SERVER_STATS.count(
                    service, method.name, outcome.code.name
                ).inc
            count()

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_type.SerializeToString
    )


async def _shed(
    context: grpc.aio.ServicerContext,
    limiter: ConcurrencyLimiter,
    method: MethodDescriptor,
    served_by: tuple[tuple[str, str], ...],
) -> None:
    """Refuse a call over the concurrency limit: RESOURCE_EXHAUSTED at once, with a retry hint.

    RESOURCE_EXHAUSTED, not UNAVAILABLE: the mesh client retries it on another instance like UNAVAILABLE
    but does not count it against this instance (outlier ejection) or the dependency (breaker), which
    would take capacity away exactly when it is short. The hint is gRPC's retry pushback trailer and a
    google.rpc.RetryInfo in the status details; `x-boutique-shed` says the handler never ran.
    """
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    service = method.containing_service.full_name
    SERVER_STATS.count(service, method.name, code.name).inc()
    delay = limiter.retry_after()
    message = (
        f"{service} is at its concurrency limit ({limiter.current_limit} calls in flight): call shed "
        f"unprocessed; retry on another instance or after {delay * 1000:.0f} ms"
    )
    details = status_details(code, message, Failure(code=code, retryable=True), retry_after=delay)
    trailers = (
        *served_by,
        (SHED, "concurrency-limit"),
        ("grpc-retry-pushback-ms", str(round(delay * 1000))),
        ("grpc-status-details-bin", details),
    )
    await context.abort(code, message, trailing_metadata=trailers)


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left of the caller's deadline: the earlier of gRPC's (relative, counted from when this
    process read the call) and the absolute one the mesh client sends (see deadline.DEADLINE_HEADER)."""
    relative = context.time_remaining()
    absolute = from_metadata(context.invocation_metadata())
    if absolute is None:
        return relative
    return absolute if relative is None else min(relative, absolute)


def _aborted_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The code an implementation aborted with itself."""
    code = context.code() if hasattr(context, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _describe(span: trace.Span, outcome: _Outcome, context: grpc.aio.ServicerContext) -> None:
    """The status code, the peer, and ERROR with the exception when the server failed."""
    code = outcome.code
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    peer = context.peer() or ""
    if peer.startswith(("ipv4:", "ipv6:")):
        address, _, port = peer.partition(":")[2].rpartition(":")
        span.set_attribute("network.peer.address", address.strip("[]"))
        if port.isdigit():
            span.set_attribute("network.peer.port", int(port))
    if outcome.error is not None:
        span.record_exception(outcome.error)
    if code in SERVER_ERROR_CODES:
        span.set_status(trace.StatusCode.ERROR, code.name)


def generic_handler(
    binding: ServiceBinding, instance: str, limiter: ConcurrencyLimiter | None = None
) -> grpc.GenericRpcHandler:
    """Build the handler for every RPC of a service from its descriptor; `limiter` caps calls in flight."""
    handlers = {}
    for method in binding.descriptor.methods:
        impl = getattr(binding.implementation, method.name, None)
        if impl is None:
            raise TypeError(f"{type(binding.implementation).__name__} does not implement {method.name}")
        handlers[method.name] = _unary_handler(method, impl, instance, limiter)
    return grpc.method_handlers_generic_handler(binding.descriptor.full_name, handlers)


class GrpcServer:
    """Serve gRPC services on host:port with health; SERVING once started, NOT_SERVING while draining.

    With a `readiness` probe (asked every `readiness_period` seconds while serving), the server reports
    NOT_SERVING while the probe says False and SERVING again once it says True, and discovery stops
    sending callers here meanwhile (see `Presence.set_ready`): what Kubernetes does with an unready pod.
    """

    def __init__(
        self,
        info: ProcessInfo,
        bindings: Iterable[ServiceBinding],
        grace: float = 5.0,
        drain_delay: float | None = None,
        mesh: Mesh | None = None,
        register: bool = False,
        limits: LimiterSettings | None = None,
        settings: MeshSettings | None = None,
        readiness: Callable[[], bool] | None = None,
        readiness_period: float = READINESS_PERIOD,
    ) -> None:
        self.info = info
        self.bindings = list(bindings)
        self.grace = grace
        settings = settings or (mesh.settings if mesh is not None else MeshSettings.current())
        check = dict(READINESS_CHECK) if readiness is not None else None
        self.presence = Presence(info, mesh, register, settings, health_check=check)
        self.readiness = readiness
        self.readiness_period = readiness_period
        self.ready = True
        self._readiness_task: asyncio.Task[None] | None = None
        # How long NOT_SERVING is announced while still accepting calls, so health checkers and
        # discovery take the instance out of rotation before it stops taking new calls.
        default_delay = 0.3 if register else 0.0
        if drain_delay is None:
            drain_delay = settings.process.drain_delay
        self.drain_delay = default_delay if drain_delay is None else drain_delay
        self.stop_timeout = settings.process.stop_timeout  # the whole stop, whatever is still in flight
        self.port = 0
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        # One concurrency limit for all the process's RPCs (health checks are never limited).
        self.limiter = (limits or settings.limiter).build("grpc")

    def _service_names(self) -> list[str]:
        return ["", *(b.descriptor.full_name for b in self.bindings)]

    async def _set_status(self, status: int) -> None:
        for name in self._service_names():
            await self.health.set(name, status)

    async def start(self) -> int:
        """Bind and start; returns the bound port (useful when PORT is 0)."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_generic_rpc_handlers(
            [generic_handler(b, self.info.instance_id, self.limiter) for b in self.bindings]
        )
        host = self.info.host
        address = f"[{host}]:{self.info.port}" if ":" in host else f"{host}:{self.info.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: port busy or address unavailable") from exc
        await server.start()
        self._server = server
        if self.limiter is not None:
            LIMITER_STATS.track(self.limiter)
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": f"{host}:{self.port}", "advertised": self.info.advertise_host})
        return self.port

    def follow_readiness(self) -> None:
        """Start asking the readiness probe (if any) while serving; `stop` ends it."""
        if self.readiness is not None and self._readiness_task is None:
            self._readiness_task = asyncio.create_task(self._follow_readiness(), name="readiness probe")

    def _probe(self) -> bool:
        """The readiness probe's answer; one that fails counts as not ready, as a failed probe does."""
        assert self.readiness is not None
        try:
            return bool(self.readiness())
        except Exception:
            log.exception("readiness probe failed")
            return False

    async def _follow_readiness(self) -> None:
        """Ask the probe every period; on a change, ask again inside a span (so what decided it, such as
        a feature flag, is recorded there) and switch health and discovery over."""
        while True:
            await asyncio.sleep(self.readiness_period)
            if self._probe() == self.ready:
                continue
            with tracer.start_as_current_span("readiness change", kind=trace.SpanKind.INTERNAL) as span:
                ready = self._probe()
                span.set_attribute("health.status", "SERVING" if ready else "NOT_SERVING")
                if ready != self.ready:
                    await self.set_ready(ready)

    async def set_ready(self, ready: bool) -> None:
        """Report SERVING or NOT_SERVING on the health service, and be routed to or not."""
        if self._server is None or ready == self.ready:
            return
        self.ready = ready
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._set_status(status)
        await self.presence.set_ready(ready)
        if ready:
            log.info("ready again: SERVING, back in rotation")
        else:
            log.warning("not ready: NOT_SERVING, out of rotation until ready again")

    async def stop(self, clock: StopClock | None = None) -> None:
        """Report NOT_SERVING, leave discovery, wait the drain delay, let in-flight calls finish within the
        grace period: each step cut to what is left of the stop budget (`clock`, else one started now),
        keeping back what closing the process needs after."""
        clock = clock or StopClock(self.stop_timeout).start()
        if self._readiness_task is not None:
            self._readiness_task.cancel()
            self._readiness_task = None
        if self._server is None:
            return
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.presence.withdraw(clock.allow(DEREGISTER_AT_MOST, keep=AFTER_SERVING))
        drain_delay = clock.allow(self.drain_delay, keep=AFTER_SERVING)
        if drain_delay > 0:
            await asyncio.sleep(drain_delay)
        grace = clock.allow(self.grace, keep=AFTER_SERVING)
        log.info(
            "draining",
            extra={"grace_seconds": round(grace, 3), "drain_delay_seconds": round(drain_delay, 3)},
        )
        await self._server.stop(grace)
        self._server = None
        if self.limiter is not None:
            LIMITER_STATS.untrack(self.limiter)
        log.info("stopped")

    async def run(self, on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start, serve until SIGTERM or SIGINT, then drain and run `on_stop` (closing clients, stores)."""
        stop = asyncio.Event()
        clock = process_stop()

        def stopping() -> None:
            clock.start(self.stop_timeout)  # the budget runs from the signal
            stop.set()

        undo = stop_on_signals(asyncio.get_running_loop(), stopping)
        await self.presence.start_status()
        await self.start()
        if self.readiness is not None and not self._probe():  # unready from the start: never routed to
            await self.set_ready(False)
        await self.presence.announce({"grpc": self.port})
        self.follow_readiness()
        await stop.wait()
        await self.stop(clock)
        if on_stop is not None:
            await on_stop()
        await self.presence.close()
        undo()
