"""A wire-compatible subset of the OTLP trace schema that leaves span bodies undecoded.

`ExportTraceServiceRequest` parsed with these messages yields each resource, scope and span as the
raw bytes that arrived, and `SpanHeader` then reads only the fields the store indexes: ids, name,
kind, times and status. Attributes, events and links stay inside the span's bytes, skipped by
length, until a query decodes them with the full schema. Built from descriptors at import time, so
there is no generated module to keep in step with the real one; field numbers follow
opentelemetry/proto/trace/v1/trace.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_T = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "boutique.observatory.light"


def _message(name: str, fields: list[tuple[str, int, int, int, str]]) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, label, type_name in fields:
        added = proto.field.add(name=field_name, number=number, type=kind, label=label)  # type: ignore[arg-type]
        if type_name:
            added.type_name = type_name
    return proto


def _build() -> dict[str, Any]:
    one, many = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(
        name="boutique_light_trace.proto", package=_PACKAGE, syntax="proto3"
    )
    file.message_type.extend(
        [
            _message("Request", [("resource_spans", 1, _T.TYPE_MESSAGE, many, f".{_PACKAGE}.ResourceSpans")]),
            _message(
                "ResourceSpans",
                [
                    ("resource", 1, _T.TYPE_BYTES, one, ""),
                    ("scope_spans", 2, _T.TYPE_MESSAGE, many, f".{_PACKAGE}.ScopeSpans"),
                ],
            ),
            _message(
                "ScopeSpans",
                [("scope", 1, _T.TYPE_BYTES, one, ""), ("spans", 2, _T.TYPE_BYTES, many, "")],
            ),
            _message(
                "Status", [("message", 2, _T.TYPE_STRING, one, ""), ("code", 3, _T.TYPE_INT32, one, "")]
            ),
            _message(
                "SpanHeader",
                [
                    ("trace_id", 1, _T.TYPE_BYTES, one, ""),
                    ("span_id", 2, _T.TYPE_BYTES, one, ""),
                    ("parent_span_id", 4, _T.TYPE_BYTES, one, ""),
                    ("name", 5, _T.TYPE_STRING, one, ""),
                    ("kind", 6, _T.TYPE_INT32, one, ""),
                    ("start_time_unix_nano", 7, _T.TYPE_FIXED64, one, ""),
                    ("end_time_unix_nano", 8, _T.TYPE_FIXED64, one, ""),
                    ("status", 15, _T.TYPE_MESSAGE, one, f".{_PACKAGE}.Status"),
                ],
            ),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("Request", "SpanHeader")
    }


_CLASSES = _build()
Request: Any = _CLASSES["Request"]
SpanHeader: Any = _CLASSES["SpanHeader"]
