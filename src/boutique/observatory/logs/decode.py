"""OTLP `ExportLogsServiceRequest` bodies (protobuf or OTLP/JSON) to a `LogBatch`.

The protobuf form is parsed by upb; the JSON form has its hex ids turned into the base64 the protobuf
JSON mapping wants (with the trace receiver's helpers) and is parsed by `json_format`, then both take
the one path below. A record whose trace id is not 16 bytes or span id not 8 (empty is fine: a record
outside any span) is refused alone and counted for the partial success; an all-zero id is no id.
Times: a record without a time takes its observed time, one without either the time it arrived.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from boutique.observatory.logs.model import MAX_SEVERITY, LogBatch, LogResource
from boutique.observatory.otlp.values import attributes, from_any
from boutique.observatory.otlp.walk_rules import UNKNOWN_SERVICE
from boutique.observatory.receivers.otlp_json import json_object, parse_request, with_hex_ids
from boutique.observatory.receivers.otlp_proto import PayloadError, json_document

BAD_IDS = "trace_id must be 16 bytes and span_id 8 bytes (or both empty)"
_RECORD_IDS = ("traceId", "trace_id", "spanId", "span_id")
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


def decode(data: bytes) -> LogBatch:
    """The records of a serialized ExportLogsServiceRequest; `PayloadError` if it is not one."""
    try:
        request = ExportLogsServiceRequest.FromString(data)
    except (DecodeError, RecursionError) as exc:
        raise PayloadError(f"not an OTLP ExportLogsServiceRequest: {exc}") from None
    return from_request(request)


def decode_json(data: bytes) -> LogBatch:
    """The records of an OTLP/JSON ExportLogsServiceRequest body; `PayloadError` if it is not one."""
    return from_request(request_from_json(json_document(data)))


def request_from_json(value: Any) -> ExportLogsServiceRequest:
    """The request a parsed OTLP/JSON document encodes; `PayloadError` for a wrong shape or bad hex."""
    return parse_request(
        value, ExportLogsServiceRequest(), "Logs", ("logRecords", "log_records"), _log_record
    )


def _log_record(value: Any, where: str) -> dict[str, Any]:
    converted = with_hex_ids(json_object(value, where), _RECORD_IDS, where)
    if converted.get("body") is not None:  # json_format would take a bare string as an empty body
        json_object(converted["body"], f"{where}.body")
    return converted


def from_request(request: ExportLogsServiceRequest) -> LogBatch:
    """The records of a parsed request, each resource decoded once."""
    batch = LogBatch()
    now_us = time.time_ns() // 1000
    for resource_logs in request.resource_logs:
        resource_index = len(batch.resources)
        used = False
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.name
            for record in scope_logs.log_records:
                trace_id, span_id = bytes(record.trace_id), bytes(record.span_id)
                if len(trace_id) not in (0, 16) or len(span_id) not in (0, 8):
                    batch.rejected += 1
                    batch.rejection = BAD_IDS
                    continue
                used = True
                observed = record.observed_time_unix_nano // 1000
                batch.time_us.append(record.time_unix_nano // 1000 or observed or now_us)
                batch.observed_us.append(observed or record.time_unix_nano // 1000 or now_us)
                number = int(record.severity_number)
                batch.severity.append(number if 0 <= number <= MAX_SEVERITY else 0)
                batch.severity_text.append(record.severity_text)
                batch.body.append(body_text(record.body))
                batch.attributes.append(json_text(attributes(record.attributes)))
                batch.scope.append(scope)
                batch.trace_id.append(b"" if trace_id == _ZERO_TRACE else trace_id)
                batch.span_id.append(b"" if span_id == _ZERO_SPAN else span_id)
                batch.resource_index.append(resource_index)
        if used:
            batch.resources.append(resource(resource_logs.resource.attributes))
    return batch


def resource(pairs: Iterable[KeyValue]) -> LogResource:
    """A resource's service (its last non-empty string `service.name`, as spans'), instance, attributes."""
    service, instance = "", ""
    for kv in pairs:
        which = kv.value.WhichOneof("value")
        if kv.key == "service.name" and which == "string_value" and kv.value.string_value:
            service = kv.value.string_value
        elif kv.key == "service.instance.id":
            instance = kv.value.string_value if which == "string_value" else ""
    return LogResource(service or UNKNOWN_SERVICE, instance, json_text(attributes(pairs)))


def body_text(body: AnyValue) -> str:
    """A record's body as text: a string as is, nothing as "", any other value as its JSON text."""
    which = body.WhichOneof("value")
    if which == "string_value":
        return body.string_value
    if which is None:
        return ""
    return json_text(from_any(body))


def _bytes(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_bytes).encode


def json_text(value: Any) -> str:
    """Compact JSON text of a value: bytes as base64, non-finite floats as their names (NaN, Infinity)."""
    try:
        return _ENCODE(value)
    except ValueError:
        return _ENCODE(_finite(value))


def _finite(value: Any) -> Any:
    """The value with every NaN or infinite float replaced by its name (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
