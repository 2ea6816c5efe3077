"""OTLP/JSON `ExportTraceServiceRequest` bodies to a `SpanBatch` (the OTLP/HTTP receiver's JSON form).

OTLP's JSON encoding is the protobuf JSON mapping with one difference: trace and span ids are hex
strings, not base64. The ids are converted here, the rest is left to `json_format` (lowerCamelCase or
snake_case keys, enums as numbers or names, 64-bit integers as strings or numbers, unknown fields
ignored), and the resulting request goes through `otlp_proto.decode`, the one path into `SpanBatch`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from boutique.observatory.model import SpanBatch
from boutique.observatory.receivers import otlp_proto
from boutique.observatory.receivers.otlp_proto import PayloadError

# Fields holding hex ids, by message, in both spellings json_format accepts.
_SPAN_IDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_LINK_IDS = ("traceId", "trace_id", "spanId", "span_id")


def decode(data: bytes) -> SpanBatch:
    """The spans of an OTLP/JSON body; `PayloadError` if it is not one."""
    return otlp_proto.decode(request_from_bytes(data).SerializeToString())


def request_from_bytes(data: bytes) -> ExportTraceServiceRequest:
    """The request an OTLP/JSON body encodes; `PayloadError` for bad JSON or a wrong shape."""
    return request_from_json(otlp_proto.json_document(data))


def request_from_json(value: Any) -> ExportTraceServiceRequest:
    """The request a parsed OTLP/JSON document encodes; `PayloadError` for a wrong shape or bad hex."""
    message = _object(value, "the request")
    converted = dict(message)
    for key in ("resourceSpans", "resource_spans"):
        if key in converted:
            converted[key] = [_resource_spans(item, f"{key}[{i}]") for i, item in _items(converted[key], key)]
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(converted, request, ignore_unknown_fields=True)
    except (
        json_format.ParseError,
        ValueError,
        TypeError,
        AttributeError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise PayloadError(f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def _resource_spans(value: Any, where: str) -> dict[str, Any]:
    converted = dict(_object(value, where))
    for key in ("scopeSpans", "scope_spans"):
        if key in converted:
            converted[key] = [
                _scope_spans(item, f"{where}.{key}[{i}]")
                for i, item in _items(converted[key], f"{where}.{key}")
            ]
    return converted


def _scope_spans(value: Any, where: str) -> dict[str, Any]:
    converted = dict(_object(value, where))
    if "spans" in converted:
        converted["spans"] = [
            _span(item, f"{where}.spans[{i}]") for i, item in _items(converted["spans"], where)
        ]
    return converted


def _span(value: Any, where: str) -> dict[str, Any]:
    converted = _with_ids(_object(value, where), _SPAN_IDS, where)
    if "links" in converted:
        converted["links"] = [
            _with_ids(_object(item, f"{where}.links[{i}]"), _LINK_IDS, f"{where}.links[{i}]")
            for i, item in _items(converted["links"], f"{where}.links")
        ]
    return converted


def _with_ids(message: dict[str, Any], keys: tuple[str, ...], where: str) -> dict[str, Any]:
    """A copy of the message with its hex id fields as the base64 `json_format` expects."""
    converted = dict(message)
    for key in keys:
        if key in converted and converted[key] is not None:
            converted[key] = _hex_to_base64(converted[key], f"{where}.{key}")
    return converted


def _hex_to_base64(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a hex string, not {type(value).__name__}")
    try:
        raw = binascii.unhexlify(value)
    except ValueError:
        raise PayloadError(f"{where} is not hex: {value[:40]!r}") from None
    return base64.b64encode(raw).decode("ascii")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be a JSON object, not {_json_type(value)}")
    return value


def _items(value: Any, where: str) -> list[tuple[int, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{where} must be a JSON array, not {_json_type(value)}")
    return list(enumerate(value))


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
