"""OTLP/protobuf `ExportTraceServiceRequest` bytes to a `SpanBatch` (every receiver ends here).

The request is parsed with the header-only schema of `otlp.light`; each resource is decoded once,
spans only as far as the indexed columns, and each span's bytes are kept as they arrived. Columns are
built a scope at a time with comprehensions: per-span Python is what ingest costs. Spans with invalid
ids are refused one by one (OTLP partial success), not the whole request.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from boutique.observatory import tagsig
from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.light import Request
from boutique.observatory.otlp.light import Resource as LightResource

UNKNOWN_SERVICE = "unknown_service"
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)
_BAD_IDS = "trace_id must be 16 bytes and span_id 8 bytes, not all zero"


class PayloadError(ValueError):
    """The payload cannot be decoded at all: the sender must not retry it (HTTP 400, INVALID_ARGUMENT)."""


def json_document(data: bytes) -> Any:
    """A JSON request body parsed (for the JSON receivers); `PayloadError` when it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PayloadError(f"not valid JSON: {exc}") from None


def decode(data: bytes) -> SpanBatch:
    """The spans of a serialized ExportTraceServiceRequest; `PayloadError` if it is not one."""
    try:
        request = Request.FromString(data)
        batch = SpanBatch()
        for resource_spans in request.resource_spans:
            resource = resource_spans.resource
            service, instance = _identity(resource)
            resource_signature = tagsig.of(list(LightResource.FromString(resource).attributes))
            for scope_spans in resource_spans.scope_spans:
                spans = list(scope_spans.spans)
                if spans:
                    _append_scope(
                        batch, spans, service, instance, resource, scope_spans.scope, resource_signature
                    )
        return batch
    except DecodeError as exc:
        raise PayloadError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None


def _identity(resource: bytes) -> tuple[str, str]:
    """`service.name` and `service.instance.id` of a serialized Resource."""
    service, instance = UNKNOWN_SERVICE, ""
    for kv in Resource.FromString(resource).attributes:
        if kv.key == "service.name" and kv.value.string_value:
            service = kv.value.string_value
        elif kv.key == "service.instance.id":
            instance = kv.value.string_value
    return service, instance


def _append_scope(
    batch: SpanBatch,
    spans: list[Any],
    service: str,
    instance: str,
    resource: bytes,
    scope: bytes,
    resource_signature: np.ndarray,
) -> None:
    """Add the spans of one scope to the batch's columns."""
    trace_ids = [s.trace_id for s in spans]
    span_ids = [s.span_id for s in spans]
    if (
        any(len(t) != 16 for t in trace_ids)
        or any(len(s) != 8 for s in span_ids)
        or _ZERO_TRACE in trace_ids
        or _ZERO_SPAN in span_ids
    ):
        kept = [
            s
            for s, t, i in zip(spans, trace_ids, span_ids, strict=True)
            if len(t) == 16 and len(i) == 8 and t != _ZERO_TRACE and i != _ZERO_SPAN
        ]
        batch.reject(len(spans) - len(kept), _BAD_IDS)
        if not kept:
            return
        spans = kept
        trace_ids = [s.trace_id for s in spans]
        span_ids = [s.span_id for s in spans]
    parents = [s.parent_span_id for s in spans]
    if any(len(p) not in (0, 8) for p in parents) or _ZERO_SPAN in parents:
        parents = [p if len(p) == 8 and p != _ZERO_SPAN else b"" for p in parents]
    starts = [s.start_time_unix_nano for s in spans]
    ends = [s.end_time_unix_nano for s in spans]
    kinds = [s.kind for s in spans]
    if min(kinds) < 0 or max(kinds) > 5:
        kinds = [k if 0 <= k <= 5 else 0 for k in kinds]  # an unknown kind is stored as unspecified
    statuses = [s.status.code for s in spans]
    if min(statuses) < 0 or max(statuses) > 2:
        statuses = [c if 0 <= c <= 2 else 0 for c in statuses]  # an unknown status code is unset
    attributes = [s.attributes for s in spans]
    signature = tagsig.signatures(
        list(chain.from_iterable(attributes)), list(map(len, attributes)), resource_signature
    )
    with_events = [(i, s.events) for i, s in enumerate(spans) if len(s.events)]
    if with_events:  # event attributes are searchable too (exception.type, …)
        pairs = [e.attributes for _, events in with_events for e in events]
        counts = [sum(len(e.attributes) for e in events) for _, events in with_events]
        rows = [i for i, _ in with_events]
        signature[rows] |= tagsig.signatures(list(chain.from_iterable(pairs)), counts)

    size = len(spans)
    batch.trace_id += trace_ids
    batch.span_id += span_ids
    batch.parent_id += parents
    batch.service += [service] * size
    batch.operation += [s.name for s in spans]
    batch.kind += kinds
    batch.start_us += [t // 1000 for t in starts]
    batch.duration_us += [(e - t) // 1000 if e > t else 0 for t, e in zip(starts, ends, strict=True)]
    batch.status += statuses
    batch.instance += [instance] * size
    batch.body += [s.SerializeToString() for s in spans]
    batch.resource += [resource] * size
    batch.scope += [scope] * size
    batch.signature.append(signature)
