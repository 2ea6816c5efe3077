"""Stored rows back to `Span`s: the one place span bodies are decoded with the full OTLP schema."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from boutique.observatory.model import Event, Link, Span
from boutique.observatory.otlp.values import attributes

_resources: dict[bytes, dict[str, object]] = {}


def resource_attributes(data: bytes) -> dict[str, object]:
    """Attributes of a serialized Resource (cached: a few resources are shared by many spans)."""
    found = _resources.get(data)
    if found is None:
        try:
            found = attributes(Resource.FromString(data).attributes)
        except DecodeError:
            found = {}
        if len(_resources) > 4096:
            _resources.clear()
        _resources[data] = found
    return dict(found)


def span_from_row(
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes,
    service: str,
    operation: str,
    kind: int,
    start_us: int,
    duration_us: int,
    status: int,
    instance: str,
    body: bytes | None,
    resource: bytes,
    scope: bytes,
    problem: str = "",
) -> Span:
    """A decoded span from a stored row; a body that is missing (None, `problem` says why) or undecodable
    keeps the indexed fields and a warning."""
    span = Span(
        trace_id=trace_id.hex(),
        span_id=span_id.hex(),
        parent_id=parent_id.hex(),
        service=service,
        operation=operation,
        kind=kind,
        start_us=start_us,
        duration_us=duration_us,
        status=status,
        instance=instance,
        resource=resource_attributes(resource),
    )
    try:
        scope_message = InstrumentationScope.FromString(scope)
    except DecodeError as exc:
        span.warnings.append(f"instrumentation scope could not be decoded: {exc}")
    else:
        span.scope_name, span.scope_version = scope_message.name, scope_message.version
    if body is None:
        span.warnings.append(problem or "span body missing")
        return span
    try:
        otlp = OtlpSpan.FromString(body)
    except DecodeError as exc:
        span.warnings.append(f"span body could not be decoded: {exc}")
        return span
    span.attributes = attributes(otlp.attributes)
    span.status_message = otlp.status.message
    span.trace_state = otlp.trace_state
    span.events = [Event(e.time_unix_nano // 1000, e.name, attributes(e.attributes)) for e in otlp.events]
    span.links = [Link(k.trace_id.hex(), k.span_id.hex(), attributes(k.attributes)) for k in otlp.links]
    return span
