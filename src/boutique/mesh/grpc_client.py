"""gRPC transport of the mesh: one grpc.aio channel per instance, calls through `Dependency`."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry import trace

from boutique.mesh.calls.outcome import CallStatus, status_of_error
from boutique.mesh.deadline import DEADLINE_HEADER, header_value
from boutique.mesh.dependency import CallPolicy, Dependency
from boutique.mesh.discovery import Resolver
from boutique.mesh.errors import FAILED_DEPENDENCY, SERVED_BY
from boutique.mesh.failure import RETRYABLE_CODES, STATUS_DETAILS, Failure, status_details
from boutique.mesh.faults import REASON
from boutique.mesh.instance import Instance
from boutique.mesh.propagation import outgoing_headers
from boutique.mesh.tracing import tracing_on

CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
)

Conn = tuple[grpc.aio.Channel, Any]


def status_of(exc: Exception) -> CallStatus:
    """What a failed gRPC attempt ended with: its status code, and whether the callee named a failed
    dependency of its own in its trailers; any other error is the mesh's or the network's."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        return CallStatus(code, code is not grpc.StatusCode.OK and _names_failed_dependency(exc))
    return status_of_error(exc)


def _names_failed_dependency(exc: grpc.aio.AioRpcError) -> bool:
    """Whether the callee answered that one of its own dependencies failed (see errors.FAILED_DEPENDENCY)."""
    return any(key == FAILED_DEPENDENCY for key, _ in exc.trailing_metadata() or ())


def grpc_service_name(stub_factory: Callable[..., Any], fallback: str) -> str:
    """The full protobuf name of the service a generated stub class calls (`hipstershop.CartService`).

    Generated `*_pb2_grpc` modules import their `*_pb2` module, whose file descriptor lists the
    services; the stub class is named after its service. Anything else gets `fallback`.
    """
    short = getattr(stub_factory, "__name__", "").removesuffix("Stub")
    module = sys.modules.get(getattr(stub_factory, "__module__", ""))
    for value in vars(module).values() if module else ():
        services = getattr(getattr(value, "DESCRIPTOR", None), "services_by_name", None)
        if services and short in services:
            return str(services[short].full_name)
    return fallback


class GrpcConnector:
    """Opens a channel and a stub per instance (its "grpc" port)."""

    port_name = "grpc"

    def __init__(self, stub_factory: Callable[[grpc.aio.Channel], Any]) -> None:
        self.stub_factory = stub_factory

    def open(self, instance: Instance) -> Conn:
        """A channel and stub for the instance."""
        channel = grpc.aio.insecure_channel(instance.endpoint("grpc"), options=CHANNEL_OPTIONS)
        return channel, self.stub_factory(channel)

    async def close(self, conn: Conn) -> None:
        """Close the channel (in-flight calls have finished or been given up on)."""
        await conn[0].close()

    async def probe(self, conn: Conn, timeout: float) -> bool:
        """Whether the instance answers the standard health check with SERVING within `timeout`."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = await health_pb2_grpc.HealthStub(conn[0]).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class GrpcDependency(Dependency[Conn]):
    """A gRPC dependency: `await dep.call("GetCart", request, idempotent=True)`."""

    def __init__(
        self,
        name: str,
        resolver: Resolver,
        stub_factory: Callable[[grpc.aio.Channel], Any],
        policy: CallPolicy | None = None,
        caller: str = "",
    ) -> None:
        super().__init__(name, resolver, GrpcConnector(stub_factory), policy, caller)
        self.rpc_service = grpc_service_name(stub_factory, name)

    span_kind = trace.SpanKind.CLIENT

    def span_name(self, method: str) -> str:
        """`package.Service/Method`, the RPC span name of the semantic conventions."""
        return f"{self.rpc_service}/{method}"

    def span_attributes(self, method: str) -> dict[str, str]:
        """The rpc.* attributes, and which dependency the mesh resolved."""
        return {
            "rpc.system": "grpc",
            "rpc.service": self.rpc_service,
            "rpc.method": method,
            "mesh.dependency": self.name,
        }

    def describe_success(self, span: trace.Span) -> None:
        """Status code OK."""
        span.set_attribute("rpc.grpc.status_code", 0)

    def describe_failure(self, span: trace.Span, exc: BaseException) -> None:
        """The gRPC status code; every code but OK is an error on a client span."""
        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            span.set_status(trace.StatusCode.ERROR, f"{code.name}: {(exc.details() or '')[:200]}")
            return
        super().describe_failure(span, exc)

    def injected_error(
        self, code: grpc.StatusCode, message: str, served_by: Instance | None
    ) -> grpc.aio.AioRpcError:
        """An injected fault as the AioRpcError the call would end with: the instance's answer (its
        served-by trailer, and the reason FAULT_INJECTED in the status details), or gRPC's own timeout."""
        trailers = grpc.aio.Metadata()
        if served_by is not None:
            failure = Failure(code=code, retryable=code in RETRYABLE_CODES, reason=REASON)
            trailers = grpc.aio.Metadata(
                (SERVED_BY, served_by.id), (STATUS_DETAILS, status_details(code, message, failure))
            )
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, message)

    def call(
        self,
        method: str,
        request: Message,
        *,
        idempotent: bool = False,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Call one unary RPC (await the result); retried elsewhere only when `idempotent`; `fallback` answers failures."""
        extra = tuple(metadata)

        def attempt(conn: Conn, per_try: float) -> Awaitable[Any]:
            # The stub's call object is itself awaitable: no coroutine of our own around it. The trace
            # headers are those of the call's span, current while attempts run.
            # The absolute deadline rides along: a server that reads the call late can tell it expired.
            deadline = ((DEADLINE_HEADER, header_value(per_try)),)
            sent = (*extra, *deadline, *outgoing_headers()) if tracing_on() else (*extra, *deadline)
            return getattr(conn[1], method)(request, timeout=per_try, metadata=sent)

        return self.invoke(
            method, attempt, status_of, retryable=idempotent, timeout=timeout, fallback=fallback
        )
