"""gRPC transport of the mesh: one grpc.aio channel per instance, calls through `Dependency`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from boutique.mesh.dependency import CallPolicy, Dependency, Outcome
from boutique.mesh.discovery import Resolver
from boutique.mesh.errors import MeshUnavailable
from boutique.mesh.instance import Instance

CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
)

_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_FAILURE = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
}

Conn = tuple[grpc.aio.Channel, Any]


def classify(exc: BaseException) -> Outcome:
    """How a failed gRPC attempt counts for retries, ejection and the breaker."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code in _TRANSIENT:
            return Outcome.TRANSIENT
        if code in _FAILURE:
            return Outcome.FAILURE
        return Outcome.CALLER_ERROR
    if isinstance(exc, MeshUnavailable | OSError | TimeoutError):
        return Outcome.TRANSIENT
    return Outcome.FAILURE


class GrpcConnector:
    """Opens a channel and a stub per instance (its "grpc" port)."""

    def __init__(self, stub_factory: Callable[[grpc.aio.Channel], Any]) -> None:
        self.stub_factory = stub_factory

    def open(self, instance: Instance) -> Conn:
        """A channel and stub for the instance."""
        channel = grpc.aio.insecure_channel(instance.endpoint("grpc"), options=CHANNEL_OPTIONS)
        return channel, self.stub_factory(channel)

    async def close(self, conn: Conn) -> None:
        """Close the channel (in-flight calls have finished or been given up on)."""
        await conn[0].close()


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
        extra = tuple(metadata) or None

        def attempt(conn: Conn, per_try: float) -> Awaitable[Any]:
            # The stub's call object is itself awaitable: no coroutine of our own around it.
            return getattr(conn[1], method)(request, timeout=per_try, metadata=extra)

        return self.invoke(
            method, attempt, classify, retryable=idempotent, timeout=timeout, fallback=fallback
        )
