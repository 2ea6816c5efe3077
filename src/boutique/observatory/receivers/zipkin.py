"""Zipkin v2 JSON spans to a `SpanBatch` (the Zipkin receiver's format).

Each Zipkin span is rewritten as an OTLP span, grouped by local service (one ResourceSpans each, with
`service.name`) and by the `otel.scope.*` tags OpenTelemetry's Zipkin exporter adds, and the request
goes through `otlp_proto.decode`, the one path into `SpanBatch`. Mapping: kind by name (none means
internal), µs times to ns, tags to string attributes, `error` and `otel.status_code` tags to the span
status, annotations to events, the remote endpoint to `peer.service` / `net.peer.ip` / `net.peer.port`.
A `shared` span (the server half of an RPC whose id the client chose) gets its own id derived from the
shared one, with the client's span as parent, so both halves of the RPC are kept.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from boutique.observatory.model import KIND_NUMBERS, STATUS_ERROR, STATUS_OK, STATUS_UNSET, SpanBatch
from boutique.observatory.otlp.values import to_key_values
from boutique.observatory.receivers import otlp_proto
from boutique.observatory.receivers.otlp_proto import UNKNOWN_SERVICE, PayloadError

_KINDS = {
    name.upper(): number for name, number in KIND_NUMBERS.items() if name not in ("unspecified", "internal")
}
_STATUS_CODES = {"UNSET": STATUS_UNSET, "OK": STATUS_OK, "ERROR": STATUS_ERROR}
_SCOPE_NAME_TAGS = ("otel.scope.name", "otel.library.name")
_SCOPE_VERSION_TAGS = ("otel.scope.version", "otel.library.version")
_STATUS_TAGS = ("error", "otel.status_code", "otel.status_description")
_MAX_US = (2**64 - 1) // 1000  # the largest µs time whose ns form fits OTLP's fixed64


@dataclass(slots=True)
class _Converted:
    """One Zipkin span as OTLP, with the service and scope it is grouped under."""

    service: str
    scope: tuple[str, str]
    span: OtlpSpan


def decode(data: bytes) -> SpanBatch:
    """The spans of a Zipkin v2 JSON body; `PayloadError` if it is not one."""
    return otlp_proto.decode(request_from_bytes(data).SerializeToString())


def request_from_bytes(data: bytes) -> ExportTraceServiceRequest:
    """The OTLP request for a Zipkin v2 JSON body; `PayloadError` for bad JSON or a wrong shape."""
    return request_from_json(otlp_proto.json_document(data))


def request_from_json(value: Any) -> ExportTraceServiceRequest:
    """The OTLP request for a parsed Zipkin v2 document (a list of spans); `PayloadError` if wrong."""
    try:
        return _request(value)
    except PayloadError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a string with an unpaired surrogate
        raise PayloadError(f"not a valid Zipkin v2 span list: {exc}") from None


def _request(value: Any) -> ExportTraceServiceRequest:
    if not isinstance(value, list):
        raise PayloadError(f"a Zipkin v2 body is a JSON array of spans, not {_json_type(value)}")
    groups: dict[str, dict[tuple[str, str], list[OtlpSpan]]] = {}
    for index, item in enumerate(value):
        converted = _span(item, f"span {index}")
        groups.setdefault(converted.service, {}).setdefault(converted.scope, []).append(converted.span)
    request = ExportTraceServiceRequest()
    for service, scopes in groups.items():
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value=service))
        )
        for (scope_name, scope_version), spans in scopes.items():
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = scope_name
            scope_spans.scope.version = scope_version
            scope_spans.spans.extend(spans)
    return request


def _span(value: Any, where: str) -> _Converted:
    """One Zipkin span as OTLP (see the module docstring for the mapping)."""
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be a JSON object, not {_json_type(value)}")
    trace_id = _hex_id(value.get("traceId"), 32, f"{where}: traceId")
    span_id = _hex_id(value.get("id"), 16, f"{where}: id")
    parent = value.get("parentId")
    parent_id = b"" if parent is None or parent == "" else _hex_id(parent, 16, f"{where}: parentId")
    kind = _kind(value.get("kind"), where)
    start = _micros(value.get("timestamp"), f"{where}: timestamp")
    duration = _micros(value.get("duration"), f"{where}: duration")
    if start + duration > _MAX_US:
        raise PayloadError(f"{where}: timestamp + duration is out of range")
    local = _endpoint(value.get("localEndpoint"), f"{where}: localEndpoint")
    remote = _endpoint(value.get("remoteEndpoint"), f"{where}: remoteEndpoint")
    tags = _tags(value.get("tags"), where)
    shared = _flag(value.get("shared"), f"{where}: shared")
    _flag(value.get("debug"), f"{where}: debug")

    span = OtlpSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        name=_text(value.get("name"), f"{where}: name"),
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start * 1000,
        end_time_unix_nano=(start + duration) * 1000,
        status=_status(tags),
    )
    if shared:
        span.parent_span_id = span_id
        span.span_id = hashlib.blake2b(trace_id + span_id, digest_size=8, person=b"zipkin-shared").digest()
    attributes: dict[str, Any] = {k: v for k, v in tags.items() if k not in _STATUS_TAGS}
    for key in (*_SCOPE_NAME_TAGS, *_SCOPE_VERSION_TAGS):
        attributes.pop(key, None)
    _endpoint_attributes(attributes, local, ("net.host.ip", "net.host.port"))
    _endpoint_attributes(attributes, remote, ("net.peer.ip", "net.peer.port"))
    if remote.get("serviceName"):
        attributes.setdefault("peer.service", remote["serviceName"])
    span.attributes.extend(to_key_values(attributes))
    span.events.extend(_annotations(value.get("annotations"), where))
    scope = (_first(tags, _SCOPE_NAME_TAGS), _first(tags, _SCOPE_VERSION_TAGS))
    return _Converted(local.get("serviceName") or UNKNOWN_SERVICE, scope, span)


def _hex_id(value: Any, size: int, where: str) -> bytes:
    """A Zipkin hex id as bytes, left-padded with zeros to `size` hex digits (16 → 32 for trace ids)."""
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{where} must be a non-empty hex string")
    if len(value) > size:
        raise PayloadError(f"{where} has more than {size} hex digits")
    try:
        return binascii.unhexlify(value.rjust(size, "0"))
    except ValueError:
        raise PayloadError(f"{where} is not hex: {value!r}") from None


def _kind(value: Any, where: str) -> int:
    if value is None:
        return KIND_NUMBERS["internal"]
    if not isinstance(value, str) or value.upper() not in _KINDS:
        raise PayloadError(f"{where}: kind must be one of {', '.join(_KINDS)}, not {value!r}")
    return _KINDS[value.upper()]


def _micros(value: Any, where: str) -> int:
    """A µs count (absent means 0); integral JSON floats such as 1.5e15 are accepted."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{where} must be a number of microseconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"{where} must be finite")
    micros = int(value)
    if not 0 <= micros <= _MAX_US:
        raise PayloadError(f"{where} is out of range")
    return micros


def _endpoint(value: Any, where: str) -> dict[str, Any]:
    """An endpoint's serviceName, ipv4, ipv6 (strings) and port (an int), those present."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be a JSON object")
    endpoint: dict[str, Any] = {}
    for key in ("serviceName", "ipv4", "ipv6"):
        if value.get(key) is not None:
            endpoint[key] = _text(value[key], f"{where}.{key}")
    port = value.get("port")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise PayloadError(f"{where}.port must be a port number")
        if port:
            endpoint["port"] = port
    return endpoint


def _endpoint_attributes(attributes: dict[str, Any], endpoint: dict[str, Any], keys: tuple[str, str]) -> None:
    """Add an endpoint's address and port under the given keys (tags already there win)."""
    address = endpoint.get("ipv4") or endpoint.get("ipv6")
    if address:
        attributes.setdefault(keys[0], address)
    if "port" in endpoint:
        attributes.setdefault(keys[1], endpoint["port"])


def _tags(value: Any, where: str) -> dict[str, str]:
    """Tags as strings (Zipkin's are; numbers and booleans sent by lenient clients are converted)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: tags must be a JSON object")
    tags: dict[str, str] = {}
    for key, tag in value.items():
        if tag is None:
            continue
        if isinstance(tag, bool):
            tags[key] = "true" if tag else "false"
        elif isinstance(tag, str | int | float):
            tags[key] = str(tag)
        else:
            raise PayloadError(f"{where}: tag {key!r} must be a string")
    return tags


def _status(tags: dict[str, str]) -> Status:
    """The span status from the `error`, `otel.status_code` and `otel.status_description` tags."""
    code = _STATUS_CODES.get(tags.get("otel.status_code", "").upper(), STATUS_UNSET)
    message = tags.get("otel.status_description", "")
    if "error" in tags:
        code = STATUS_ERROR
        message = message or tags["error"]
    return Status(code=code, message=message if code == STATUS_ERROR else "")  # type: ignore[arg-type]


def _annotations(value: Any, where: str) -> Iterable[OtlpSpan.Event]:
    """Annotations as events; a value holding `{"name": {attributes}}` (OpenTelemetry's form) is unpacked."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{where}: annotations must be a JSON array")
    events = []
    for index, annotation in enumerate(value):
        here = f"{where}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise PayloadError(f"{here} must be a JSON object")
        timestamp = _micros(annotation.get("timestamp"), f"{here}.timestamp")
        text = _text(annotation.get("value"), f"{here}.value")
        name, attributes = _event_parts(text)
        event = OtlpSpan.Event(time_unix_nano=timestamp * 1000, name=name)
        event.attributes.extend(to_key_values(attributes))
        events.append(event)
    return events


def _event_parts(text: str) -> tuple[str, dict[str, Any]]:
    if text.startswith("{") and text.endswith("}"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            return text, {}
        if isinstance(parsed, dict) and len(parsed) == 1:
            ((name, attributes),) = parsed.items()
            if isinstance(attributes, dict):
                return name, attributes
    return text, {}


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a string")
    return value


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PayloadError(f"{where} must be true or false")
    return value


def _first(tags: dict[str, str], keys: tuple[str, ...]) -> str:
    return next((tags[key] for key in keys if tags.get(key)), "")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
