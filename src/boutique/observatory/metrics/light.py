"""A wire-compatible reading of `ExportMetricsServiceRequest` that leaves attributes as their bytes.

Parsed with `Request`, a request gives every field `metrics.decode` reads, except that attributes
(of resources, data points and exemplars) stay the serialized `KeyValue`s that arrived, and the
resource the serialized `Resource`: most points belong to a series seen before, found by those bytes
without building a Python object per attribute. Strings are read as bytes (decoded where used), the
oneofs (`data`, `value`) as optional fields with presence, enums as int32; the schema is proto2 so
every optional field has presence. Built from descriptors at import time; field numbers follow
opentelemetry/proto/metrics/v1/metrics.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_T = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "boutique.observatory.metrics.light"
_ONE, _MANY = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED
_BYTES, _MESSAGE, _FIXED64, _DOUBLE = _T.TYPE_BYTES, _T.TYPE_MESSAGE, _T.TYPE_FIXED64, _T.TYPE_DOUBLE
_TIMES = [("start_time_unix_nano", 2, _FIXED64, _ONE, ""), ("time_unix_nano", 3, _FIXED64, _ONE, "")]

_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "Request": [("resource_metrics", 1, _MESSAGE, _MANY, "ResourceMetrics")],
    "ResourceMetrics": [
        ("resource", 1, _BYTES, _ONE, ""),
        ("scope_metrics", 2, _MESSAGE, _MANY, "ScopeMetrics"),
    ],
    "ScopeMetrics": [("scope", 1, _MESSAGE, _ONE, "Scope"), ("metrics", 2, _MESSAGE, _MANY, "Metric")],
    "Scope": [("name", 1, _BYTES, _ONE, "")],
    "Metric": [
        ("name", 1, _BYTES, _ONE, ""),
        ("description", 2, _BYTES, _ONE, ""),
        ("unit", 3, _BYTES, _ONE, ""),
        ("gauge", 5, _MESSAGE, _ONE, "Gauge"),
        ("sum", 7, _MESSAGE, _ONE, "Sum"),
        ("histogram", 9, _MESSAGE, _ONE, "Histogram"),
        ("exponential_histogram", 10, _MESSAGE, _ONE, "ExponentialHistogram"),
        ("summary", 11, _MESSAGE, _ONE, "Summary"),
    ],
    "Gauge": [("data_points", 1, _MESSAGE, _MANY, "NumberDataPoint")],
    "Sum": [
        ("data_points", 1, _MESSAGE, _MANY, "NumberDataPoint"),
        ("aggregation_temporality", 2, _T.TYPE_INT32, _ONE, ""),
        ("is_monotonic", 3, _T.TYPE_BOOL, _ONE, ""),
    ],
    "Histogram": [
        ("data_points", 1, _MESSAGE, _MANY, "HistogramDataPoint"),
        ("aggregation_temporality", 2, _T.TYPE_INT32, _ONE, ""),
    ],
    "ExponentialHistogram": [
        ("data_points", 1, _MESSAGE, _MANY, "ExponentialHistogramDataPoint"),
        ("aggregation_temporality", 2, _T.TYPE_INT32, _ONE, ""),
    ],
    "Summary": [("data_points", 1, _MESSAGE, _MANY, "SummaryDataPoint")],
    "NumberDataPoint": [
        ("attributes", 7, _BYTES, _MANY, ""),
        *_TIMES,
        ("as_double", 4, _DOUBLE, _ONE, ""),
        ("as_int", 6, _T.TYPE_SFIXED64, _ONE, ""),
        ("exemplars", 5, _MESSAGE, _MANY, "Exemplar"),
        ("flags", 8, _T.TYPE_UINT32, _ONE, ""),
    ],
    "HistogramDataPoint": [
        ("attributes", 9, _BYTES, _MANY, ""),
        *_TIMES,
        ("count", 4, _FIXED64, _ONE, ""),
        ("sum", 5, _DOUBLE, _ONE, ""),
        ("bucket_counts", 6, _FIXED64, _MANY, ""),
        ("explicit_bounds", 7, _DOUBLE, _MANY, ""),
        ("exemplars", 8, _MESSAGE, _MANY, "Exemplar"),
        ("flags", 10, _T.TYPE_UINT32, _ONE, ""),
        ("min", 11, _DOUBLE, _ONE, ""),
        ("max", 12, _DOUBLE, _ONE, ""),
    ],
    "ExponentialHistogramDataPoint": [
        ("attributes", 1, _BYTES, _MANY, ""),
        *_TIMES,
        ("count", 4, _FIXED64, _ONE, ""),
        ("sum", 5, _DOUBLE, _ONE, ""),
        ("scale", 6, _T.TYPE_SINT32, _ONE, ""),
        ("zero_count", 7, _FIXED64, _ONE, ""),
        ("positive", 8, _MESSAGE, _ONE, "Buckets"),
        ("negative", 9, _MESSAGE, _ONE, "Buckets"),
        ("flags", 10, _T.TYPE_UINT32, _ONE, ""),
        ("exemplars", 11, _MESSAGE, _MANY, "Exemplar"),
        ("min", 12, _DOUBLE, _ONE, ""),
        ("max", 13, _DOUBLE, _ONE, ""),
        ("zero_threshold", 14, _DOUBLE, _ONE, ""),
    ],
    "Buckets": [("offset", 1, _T.TYPE_SINT32, _ONE, ""), ("bucket_counts", 2, _T.TYPE_UINT64, _MANY, "")],
    "SummaryDataPoint": [
        ("attributes", 7, _BYTES, _MANY, ""),
        *_TIMES,
        ("count", 4, _FIXED64, _ONE, ""),
        ("sum", 5, _DOUBLE, _ONE, ""),
        ("quantile_values", 6, _MESSAGE, _MANY, "ValueAtQuantile"),
        ("flags", 8, _T.TYPE_UINT32, _ONE, ""),
    ],
    "ValueAtQuantile": [("quantile", 1, _DOUBLE, _ONE, ""), ("value", 2, _DOUBLE, _ONE, "")],
    "Exemplar": [
        ("filtered_attributes", 7, _BYTES, _MANY, ""),
        ("time_unix_nano", 2, _FIXED64, _ONE, ""),
        ("as_double", 3, _DOUBLE, _ONE, ""),
        ("span_id", 4, _BYTES, _ONE, ""),
        ("trace_id", 5, _BYTES, _ONE, ""),
        ("as_int", 6, _T.TYPE_SFIXED64, _ONE, ""),
    ],
}


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="boutique_light_metrics.proto", package=_PACKAGE, syntax="proto2"
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = message.field.add(name=field_name, number=number, type=kind, label=label)  # type: ignore[arg-type]
            if type_name:
                added.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Request"))


Request: Any = _build()
