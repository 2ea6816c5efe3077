"""OTLP/protobuf `ExportTraceServiceRequest` bytes to a `SpanBatch` (used by the gRPC and HTTP receivers).

The request is parsed with the header-only schema of `otlp.light`: resources and scopes are decoded
once each, spans only as far as the indexed columns, and each span's bytes are kept as they arrived.
Spans with invalid ids are refused one by one (OTLP partial success), not the whole request.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.light import Request, SpanHeader

UNKNOWN_SERVICE = "unknown_service"
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


class PayloadError(ValueError):
    """The payload cannot be decoded at all: the sender must not retry it (HTTP 400, INVALID_ARGUMENT)."""


def _identity(resource_bytes: bytes) -> tuple[str, str]:
    """`service.name` and `service.instance.id` of a serialized Resource."""
    service, instance = UNKNOWN_SERVICE, ""
    for kv in Resource.FromString(resource_bytes).attributes:
        if kv.key == "service.name" and kv.value.string_value:
            service = kv.value.string_value
        elif kv.key == "service.instance.id":
            instance = kv.value.string_value
    return service, instance


def decode(data: bytes) -> SpanBatch:
    """The spans of a serialized ExportTraceServiceRequest; `PayloadError` if it is not one."""
    try:
        request = Request.FromString(data)
        return _columns(request)
    except DecodeError as exc:
        raise PayloadError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None


def _columns(request: object) -> SpanBatch:
    batch = SpanBatch()
    trace_ids, span_ids, parent_ids = batch.trace_id, batch.span_id, batch.parent_id
    services, operations, kinds = batch.service, batch.operation, batch.kind
    starts, durations, statuses = batch.start_us, batch.duration_us, batch.status
    instances, bodies, resources, scopes = batch.instance, batch.body, batch.resource, batch.scope
    header_from = SpanHeader.FromString
    for resource_spans in request.resource_spans:  # type: ignore[attr-defined]
        resource = resource_spans.resource
        service, instance = _identity(resource)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for body in scope_spans.spans:
                span = header_from(body)
                trace_id, span_id = span.trace_id, span.span_id
                if (
                    len(trace_id) != 16
                    or trace_id == _ZERO_TRACE
                    or len(span_id) != 8
                    or span_id == _ZERO_SPAN
                ):
                    batch.reject(1, "trace_id must be 16 bytes and span_id 8 bytes, not all zero")
                    continue
                parent = span.parent_span_id
                if parent and (len(parent) != 8 or parent == _ZERO_SPAN):
                    parent = b""
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                trace_ids.append(trace_id)
                span_ids.append(span_id)
                parent_ids.append(parent)
                services.append(service)
                operations.append(span.name)
                kind = span.kind
                kinds.append(kind if 0 <= kind <= 5 else 0)  # an unknown kind is stored as unspecified
                starts.append(start // 1000)
                durations.append((end - start) // 1000 if end > start else 0)
                status = span.status.code
                statuses.append(status if 0 <= status <= 2 else 0)  # an unknown status code is unset
                instances.append(instance)
                bodies.append(body)
                resources.append(resource)
                scopes.append(scope)
    return batch
