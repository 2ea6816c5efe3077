"""What a receiver is: a port it listens on, HTTP routes or a gRPC service, and the decoders of its payloads.

A receiver module declares one `HttpReceiver` or `GrpcReceiver` as `RECEIVER`; the server walks
`receivers.RECEIVERS` and mounts every HTTP receiver's routes on the port it names and every gRPC
receiver's service on a gRPC server on its port (receivers naming the same port share it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

import grpc
from starlette.routing import BaseRoute

from boutique.observatory.config import Ports
from boutique.observatory.model import SpanBatch
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.signals import Batch

Decoder = Callable[[bytes], Batch]  # a payload to a batch; `PayloadError` when it cannot be decoded
B = TypeVar("B", bound=Batch)
SpanDecoder = Callable[[bytes], SpanBatch]  # a payload to spans
INLINE_DECODE_BYTES = 512 * 1024  # larger payloads are decoded on a worker thread, off the event loop
PORT_NAMES = tuple(f.name for f in fields(Ports))


@dataclass(frozen=True)
class Limits:
    """Request limits; `max_body_bytes` applies to the body as sent and, when gzipped, as inflated."""

    max_body_bytes: int = 16 * 1024 * 1024


def _check_port(name: str, port: str) -> None:
    if port not in PORT_NAMES:
        raise ValueError(f"receiver {name!r}: port must be one of {', '.join(PORT_NAMES)}, not {port!r}")


@dataclass(frozen=True)
class HttpReceiver:
    """A receiver served as HTTP routes on the observatory port named `port` (a field of `Ports`)."""

    name: str
    port: str
    decoders: Mapping[str, Decoder]  # Content-Type (no parameters; "" when absent) → decoder
    routes: Callable[[Pipeline, Limits], list[BaseRoute]]

    def __post_init__(self) -> None:
        _check_port(self.name, self.port)


@dataclass(frozen=True)
class GrpcReceiver:
    """A receiver served as one gRPC service (`methods` by name) on the port named `port`."""

    name: str
    port: str
    decoders: Mapping[str, Decoder]  # request message type → decoder
    service: str  # the full service name, e.g. "opentelemetry.proto.collector.trace.v1.TraceService"
    methods: Callable[[Pipeline], Mapping[str, grpc.RpcMethodHandler]]

    def __post_init__(self) -> None:
        _check_port(self.name, self.port)

    def handler(self, pipeline: Pipeline) -> grpc.GenericRpcHandler:
        """The service's methods feeding `pipeline`, ready for `server.add_generic_rpc_handlers`."""
        return grpc.method_handlers_generic_handler(self.service, dict(self.methods(pipeline)))


Receiver = HttpReceiver | GrpcReceiver


async def decode_payload(decoder: Callable[[bytes], B], payload: bytes) -> B:
    """The payload's batch, decoded inline when small and on a worker thread when large."""
    if len(payload) <= INLINE_DECODE_BYTES:
        return decoder(payload)
    return await asyncio.to_thread(decoder, payload)


def make_grpc_server(
    max_message_bytes: int, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    """A grpc.aio server refusing request messages above `max_message_bytes` (RESOURCE_EXHAUSTED)."""
    return grpc.aio.server(
        interceptors=list(interceptors),
        options=[("grpc.max_receive_message_length", max_message_bytes)],
    )
