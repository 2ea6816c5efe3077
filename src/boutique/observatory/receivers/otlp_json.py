"""OTLP/JSON `ExportTraceServiceRequest` bodies to a `SpanBatch` (the OTLP/HTTP receiver's JSON form).

OTLP's JSON encoding is the protobuf JSON mapping with one difference: trace and span ids are hex
strings, not base64. The ids are converted here, the rest is left to `json_format` (lowerCamelCase or
snake_case keys, enums as numbers or names, 64-bit integers as strings or numbers, unknown fields
ignored), and the resulting request goes through `otlp_proto.decode`, the one path into `SpanBatch`.
The walk over resources, scopes and their items (`parse_request`) and the shape checks are public: the
log and metric decoders read their OTLP/JSON forms with them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
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
    return parse_request(value, ExportTraceServiceRequest(), "Spans", ("spans",), _span)


def _span(value: Any, where: str) -> dict[str, Any]:
    converted = with_hex_ids(json_object(value, where), _SPAN_IDS, where)
    return convert_lists(converted, ("links",), _link, where)


def _link(value: Any, where: str) -> dict[str, Any]:
    return with_hex_ids(json_object(value, where), _LINK_IDS, where)


# ---- OTLP/JSON shapes, shared by the trace, log and metric decoders ------------------------------

Convert = Callable[[Any, str], dict[str, Any]]  # one JSON value, where it is (for errors) → converted
_Request = TypeVar("_Request", bound=Message)


def parse_request(
    value: Any, request: _Request, signal: str, items: tuple[str, ...], item: Convert
) -> _Request:
    """The request message filled from a parsed OTLP/JSON document; `PayloadError` for a wrong shape.

    The document's resource list (`resource<signal>` or `resource_<signal>`: "Spans", "Logs" or
    "Metrics"), each one's scope list (`scope<signal>`, `scope_<signal>`) and each scope's item list
    (any of the keys `items`) are checked to be arrays of objects, each item converted by `item` (its hex
    ids, say); the rest is left to `json_format`.
    """
    resources = (f"resource{signal}", f"resource_{signal.lower()}")
    scopes = (f"scope{signal}", f"scope_{signal.lower()}")

    def scope(found: Any, where: str) -> dict[str, Any]:
        return convert_lists(json_object(found, where), items, item, where)

    def resource(found: Any, where: str) -> dict[str, Any]:
        return convert_lists(json_object(found, where), scopes, scope, where)

    converted = convert_lists(json_object(value, "the request"), resources, resource, "")
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
        raise PayloadError(f"not an OTLP/JSON {request.DESCRIPTOR.name}: {exc}") from None
    return request


def convert_lists(
    message: dict[str, Any], keys: tuple[str, ...], convert: Convert, where: str
) -> dict[str, Any]:
    """A copy of a JSON object with each array under `keys` converted item by item (`where` is its path)."""
    converted = dict(message)
    for key in keys:
        if key in converted:
            path = f"{where}.{key}" if where else key
            converted[key] = [convert(found, f"{path}[{i}]") for i, found in json_items(converted[key], path)]
    return converted


def with_hex_ids(message: dict[str, Any], keys: tuple[str, ...], where: str) -> dict[str, Any]:
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


def json_object(value: Any, where: str) -> dict[str, Any]:
    """The value if it is a JSON object; `PayloadError` naming `where` if not."""
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be a JSON object, not {json_type(value)}")
    return value


def json_items(value: Any, where: str) -> list[tuple[int, Any]]:
    """The (index, item) pairs of a JSON array (none for null); `PayloadError` naming `where` otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{where} must be a JSON array, not {json_type(value)}")
    return list(enumerate(value))


def json_type(value: Any) -> str:
    """What a parsed JSON value is, for error messages ("an object", "a string", ...)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
