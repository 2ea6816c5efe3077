"""The OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on the otlp_grpc port.

The method is registered through a generic handler without a request deserializer, so the servicer
gets the raw request bytes and hands them to `otlp_proto.decode` (the fast header-only parse) instead
of gRPC building the full message tree first. Status codes follow the OTLP spec: INVALID_ARGUMENT for
undecodable data (not retried), RESOURCE_EXHAUSTED when the queue is full and UNAVAILABLE when the
store fails (both retried; the delay is sent as `RetryInfo`, both in the status details and in the
`google.rpc.retryinfo-bin` trailer the Python SDK reads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from boutique.observatory.pipeline import Pipeline, QueueFull, StoreFailed
from boutique.observatory.receivers import otlp_proto
from boutique.observatory.receivers.base import B, GrpcReceiver, SpanDecoder, decode_payload
from boutique.observatory.receivers.otlp_proto import PayloadError

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = "Export"
REQUEST = "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"
DECODERS: dict[str, SpanDecoder] = {REQUEST: otlp_proto.decode}


def _retry_trailers(code: grpc.StatusCode, message: str, seconds: int) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata telling the sender when to retry (status details and the SDK's own trailer)."""
    retry = RetryInfo(retry_delay=Duration(seconds=seconds))
    detail = AnyMessage()
    detail.Pack(retry)
    status = Status(code=code.value[0], message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
    )


class TraceService:
    """The Export method over a pipeline (raw bytes in, serialized `ExportTraceServiceResponse` out)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def export(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """Decode and store one request; abort with the OTLP status code when that is not possible."""
        batch = await store_or_abort(self.pipeline, DECODERS[REQUEST], request, context)
        response = ExportTraceServiceResponse()
        if batch.rejected:
            response.partial_success.rejected_spans = batch.rejected
            response.partial_success.error_message = batch.rejection
        return response.SerializeToString()


async def store_or_abort(
    pipeline: Pipeline,
    decoder: Callable[[bytes], B],
    request: bytes,
    context: grpc.aio.ServicerContext[bytes, bytes],
    items: str = "spans",
) -> B:
    """Decode and store one request's batch (of any signal); abort with the OTLP status code otherwise."""
    try:
        batch = await decode_payload(decoder, request)
    except PayloadError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    try:
        await pipeline.submit(batch)
    except QueueFull as exc:
        await _abort_retryable(context, grpc.StatusCode.RESOURCE_EXHAUSTED, exc, exc.retry_after, items)
    except StoreFailed as exc:
        await _abort_retryable(context, grpc.StatusCode.UNAVAILABLE, exc, exc.retry_after, items)
    return batch


async def _abort_retryable(
    context: grpc.aio.ServicerContext[bytes, bytes],
    code: grpc.StatusCode,
    exc: Exception,
    seconds: int,
    items: str,
) -> None:
    message = f"the observatory cannot take {items} now: {exc}"
    await context.abort(code, message, trailing_metadata=_retry_trailers(code, message, seconds))


def trace_service_methods(pipeline: Pipeline) -> Mapping[str, grpc.RpcMethodHandler]:
    """TraceService's one method, Export, feeding the pipeline (raw bytes in and out)."""
    service = TraceService(pipeline)
    handler = grpc.unary_unary_rpc_method_handler(
        service.export, request_deserializer=None, response_serializer=None
    )
    return {METHOD: handler}


RECEIVER = GrpcReceiver(
    name="otlp_grpc", port="otlp_grpc", decoders=DECODERS, service=SERVICE, methods=trace_service_methods
)
