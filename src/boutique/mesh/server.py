"""A grpc.aio server that every service runs: health, decode errors, served-by, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from boutique.mesh.config import ProcessInfo, env_duration
from boutique.mesh.deadline import deadline_in
from boutique.mesh.presence import Presence
from boutique.mesh.runtime import Mesh

log = logging.getLogger(__name__)

SERVED_BY = "x-served-by"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """A protobuf service and the object whose async methods (named like the RPCs) implement it."""

    descriptor: ServiceDescriptor
    implementation: object


def _status_of(exc: BaseException) -> grpc.StatusCode | None:
    """A domain error names its gRPC status with a `grpc_code` attribute (duck-typed, no shop import)."""
    code = getattr(exc, "grpc_code", None)
    return code if isinstance(code, grpc.StatusCode) else None


def _unary_handler(
    method: MethodDescriptor, impl: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], instance: str
) -> grpc.RpcMethodHandler:
    """Wrap one implementation method: parse bytes ourselves so bad protobuf is INVALID_ARGUMENT."""
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    served_by = ((SERVED_BY, instance),)

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        context.set_trailing_metadata(served_by)
        try:
            request = request_type.FromString(raw)
        except (DecodeError, ValueError) as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method.input_type.full_name}: {exc}"
            )
        try:
            with deadline_in(context.time_remaining()):
                return await impl(request, context)
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = _status_of(exc)
            if code is None:
                log.exception("unhandled error in %s", method.full_name)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.full_name}")
            await context.abort(code, str(exc))

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_type.SerializeToString
    )


def generic_handler(binding: ServiceBinding, instance: str) -> grpc.GenericRpcHandler:
    """Build the handler for every RPC of a service from its descriptor."""
    handlers = {}
    for method in binding.descriptor.methods:
        impl = getattr(binding.implementation, method.name, None)
        if impl is None:
            raise TypeError(f"{type(binding.implementation).__name__} does not implement {method.name}")
        handlers[method.name] = _unary_handler(method, impl, instance)
    return grpc.method_handlers_generic_handler(binding.descriptor.full_name, handlers)


class GrpcServer:
    """Serve gRPC services on host:port with health; SERVING once started, NOT_SERVING while draining."""

    def __init__(
        self,
        info: ProcessInfo,
        bindings: Iterable[ServiceBinding],
        grace: float = 5.0,
        drain_delay: float | None = None,
        mesh: Mesh | None = None,
        register: bool = False,
    ) -> None:
        self.info = info
        self.bindings = list(bindings)
        self.grace = grace
        self.presence = Presence(info, mesh, register)
        # How long NOT_SERVING is announced while still accepting calls, so health checkers and
        # discovery take the instance out of rotation before it stops taking new calls.
        default_delay = 0.3 if register else 0.0
        self.drain_delay = (
            env_duration("BOUTIQUE_DRAIN_DELAY", default_delay) if drain_delay is None else drain_delay
        )
        self.port = 0
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

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
        server.add_generic_rpc_handlers([generic_handler(b, self.info.instance_id) for b in self.bindings])
        address = f"{self.info.host}:{self.info.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: port busy or address unavailable") from exc
        await server.start()
        self._server = server
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": f"{self.info.host}:{self.port}"})
        return self.port

    async def stop(self) -> None:
        """Report NOT_SERVING, wait the drain delay, let in-flight calls finish within the grace period."""
        if self._server is None:
            return
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.presence.withdraw()
        log.info("draining", extra={"grace_seconds": self.grace, "drain_delay_seconds": self.drain_delay})
        if self.drain_delay > 0:
            await asyncio.sleep(self.drain_delay)
        await self._server.stop(self.grace)
        self._server = None
        log.info("stopped")

    async def run(self, on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start, serve until SIGTERM or SIGINT, then drain and run `on_stop` (closing clients, stores)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.presence.start_status()
        await self.start()
        await self.presence.announce({"grpc": self.port})
        await stop.wait()
        await self.stop()
        if on_stop is not None:
            await on_stop()
        await self.presence.close()
