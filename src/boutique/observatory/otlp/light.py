"""A wire-compatible subset of the OTLP trace schema that leaves span bodies mostly undecoded.

`ExportTraceServiceRequest` parsed with `Request` yields each resource and scope as the bytes that
arrived and each span with only what the store indexes decoded — ids, name, kind, times, status —
plus its attributes (and its events' attributes) as the raw serialized `KeyValue`s, which is what
the tag signature hashes. Everything else stays as unknown fields, and `SerializeToString()` gives
back the whole span (fields re-ordered, same message). Built from descriptors at import time, so
there is no generated module to keep in step; field numbers follow
opentelemetry/proto/trace/v1/trace.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_T = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "boutique.observatory.light"
_ONE, _MANY = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED


def _message(name: str, fields: list[tuple[str, int, int, int, str]]) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, label, type_name in fields:
        added = proto.field.add(name=field_name, number=number, type=kind, label=label)  # type: ignore[arg-type]
        if type_name:
            added.type_name = f".{_PACKAGE}.{type_name}"
    return proto


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="boutique_light_trace.proto", package=_PACKAGE, syntax="proto3"
    )
    file.message_type.extend(
        [
            _message("Request", [("resource_spans", 1, _T.TYPE_MESSAGE, _MANY, "ResourceSpans")]),
            _message(
                "ResourceSpans",
                [
                    ("resource", 1, _T.TYPE_BYTES, _ONE, ""),
                    ("scope_spans", 2, _T.TYPE_MESSAGE, _MANY, "ScopeSpans"),
                ],
            ),
            _message(
                "ScopeSpans",
                [("scope", 1, _T.TYPE_BYTES, _ONE, ""), ("spans", 2, _T.TYPE_MESSAGE, _MANY, "Span")],
            ),
            _message(
                "Status", [("message", 2, _T.TYPE_STRING, _ONE, ""), ("code", 3, _T.TYPE_INT32, _ONE, "")]
            ),
            _message("Event", [("attributes", 3, _T.TYPE_BYTES, _MANY, "")]),
            _message(
                "Span",
                [
                    ("trace_id", 1, _T.TYPE_BYTES, _ONE, ""),
                    ("span_id", 2, _T.TYPE_BYTES, _ONE, ""),
                    ("parent_span_id", 4, _T.TYPE_BYTES, _ONE, ""),
                    ("name", 5, _T.TYPE_STRING, _ONE, ""),
                    ("kind", 6, _T.TYPE_INT32, _ONE, ""),
                    ("start_time_unix_nano", 7, _T.TYPE_FIXED64, _ONE, ""),
                    ("end_time_unix_nano", 8, _T.TYPE_FIXED64, _ONE, ""),
                    ("attributes", 9, _T.TYPE_BYTES, _MANY, ""),
                    ("events", 11, _T.TYPE_MESSAGE, _MANY, "Event"),
                    ("status", 15, _T.TYPE_MESSAGE, _ONE, "Status"),
                ],
            ),
            _message("Resource", [("attributes", 1, _T.TYPE_BYTES, _MANY, "")]),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("Request", "Resource")
    }


_CLASSES = _build()
Request: Any = _CLASSES["Request"]
Resource: Any = _CLASSES["Resource"]
