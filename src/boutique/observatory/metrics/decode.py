"""OTLP metrics, protobuf or JSON, to a `MetricBatch`: every data point kind, each point checked alone.

A payload that is not an `ExportMetricsServiceRequest` at all is a `PayloadError` (400,
INVALID_ARGUMENT). Within a valid request a data point that breaks the OTLP data model is refused by
itself and counted as `rejected` (the partial success `rejected_data_points`): a point without a time or
a value, a start after its time, an unspecified aggregation temporality, a sum that is not finite or a
monotonic sum below zero, histogram buckets that do not match their bounds (one more count than bounds,
bounds strictly increasing) or their count, an exponential scale outside -10..20, a summary quantile
outside 0..1, an exemplar id of the wrong length, and every point of a metric without a name or of an
unknown data kind. A point flagged "no recorded value" carries nothing and is skipped.

Series are named by their resource's `service.name` (else `unknown_service`) and
`service.instance.id`. Every string attribute value (of the resource, the point and its exemplars) and
every description passes `processors.redact.mask_text`, so no card number is stored.

The protobuf form is read with `metrics.light`, which leaves attributes as the bytes that arrived:
a point's series is found by them (cached between requests), and they are decoded (and checked: a
string that is not UTF-8 makes the payload undecodable, as a full parse would) only for a new series.
The JSON form is OTLP/JSON (`receivers.otlp_json`'s rules: hex ids, 64-bit integers as strings or
numbers, enums as numbers or names, unknown fields ignored); exemplar ids are converted to the base64
`json_format` expects, the rest is parsed into the request message, and its bytes decoded as above.
"""

from __future__ import annotations

import base64
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from boutique.observatory.metrics import light
from boutique.observatory.metrics.model import (
    KINDS,
    Kind,
    MetricBatch,
    PointRow,
    Series,
    Temporality,
    attributes_json,
)
from boutique.observatory.otlp import values as otlp_values
from boutique.observatory.processors.redact import mask_text
from boutique.observatory.receivers.otlp_json import convert_lists, json_object, parse_request, with_hex_ids
from boutique.observatory.receivers.otlp_proto import UNKNOWN_SERVICE, PayloadError, json_document

NO_RECORDED_VALUE = 1  # DataPointFlags: the point marks a gap and holds no value
MIN_SCALE, MAX_SCALE = -10, 20  # the exponential scales OTLP allows
MAX_BUCKETS = 1 << 14  # buckets of one histogram point (the SDKs send 160 at most by default)
MAX_EXPONENT = 1023  # bucket bounds must stay below 2**1024, the largest double
_TEMPORALITIES: dict[int, Temporality] = {1: "delta", 2: "cumulative"}
_EXEMPLAR_IDS = ("traceId", "trace_id", "spanId", "span_id")
_KIND_KEYS = {  # OTLP/JSON's data keys, in both spellings, to the kind
    "gauge": "gauge",
    "sum": "sum",
    "histogram": "histogram",
    "exponentialHistogram": "exponential_histogram",
    "exponential_histogram": "exponential_histogram",
    "summary": "summary",
}
CACHE_LIMIT = 4096  # resources and instruments remembered between requests
SERIES_LIMIT = 1 << 16  # series remembered between requests, all instruments together
_MAX_REASONS = 5  # distinct refusal reasons kept in a batch's message


class Refused(ValueError):
    """One data point (or a metric's points) that cannot be stored; the message says why."""


masked = lru_cache(maxsize=1 << 16)(mask_text)  # attribute values repeat across points


# ---- entry points ------------------------------------------------------------------------------


def decode(data: bytes) -> MetricBatch:
    """The points of a serialized ExportMetricsServiceRequest; `PayloadError` if it is not one."""
    try:
        request = light.Request.FromString(data)
    except (DecodeError, RecursionError) as exc:
        raise PayloadError(f"not an OTLP ExportMetricsServiceRequest: {exc}") from None
    decoder = _Decoder()
    for resource_metrics in request.resource_metrics:
        decoder.resource(resource_metrics)
    return decoder.finish()


def decode_json(data: bytes) -> MetricBatch:
    """The points of an OTLP/JSON ExportMetricsServiceRequest body; `PayloadError` if it is not one."""
    return decode(request_from_json(json_document(data)).SerializeToString())


def request_from_json(value: Any) -> ExportMetricsServiceRequest:
    """The request a parsed OTLP/JSON document encodes; `PayloadError` for a wrong shape or bad hex."""
    return parse_request(value, ExportMetricsServiceRequest(), "Metrics", ("metrics",), _metric)


# ---- JSON ids ----------------------------------------------------------------------------------


def _metric(value: Any, where: str) -> dict[str, Any]:
    converted = dict(json_object(value, where))
    for key in _KIND_KEYS:
        if isinstance(converted.get(key), dict):
            converted[key] = convert_lists(
                converted[key], ("dataPoints", "data_points"), _point, f"{where}.{key}"
            )
    return converted


def _point(value: Any, where: str) -> dict[str, Any]:
    return convert_lists(json_object(value, where), ("exemplars",), _exemplar, where)


def _exemplar(value: Any, where: str) -> dict[str, Any]:
    return with_hex_ids(json_object(value, where), _EXEMPLAR_IDS, where)


# ---- values ------------------------------------------------------------------------------------


def _plain_leaf(which: str, value: Any) -> Any:
    if which == "string_value":
        return masked(value)
    if which == "bytes_value":
        return base64.b64encode(value).decode()
    if which == "double_value" and not math.isfinite(value):
        return str(value)
    return value


def plain(value: AnyValue) -> Any:
    """An attribute value as JSON can hold it: strings masked, bytes as base64, non-finite floats as text."""
    return otlp_values.from_any(value, _plain_leaf)


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """A KeyValue list as a dict of plain values (a repeated key keeps its last value)."""
    return otlp_values.attributes(pairs, _plain_leaf)


def raw_attributes(pairs: Sequence[bytes]) -> dict[str, Any]:
    """Serialized KeyValues as a dict of plain values; `PayloadError` when one is not a valid KeyValue."""
    try:
        return attributes(KeyValue.FromString(pair) for pair in pairs)
    except (DecodeError, RecursionError) as exc:
        raise PayloadError(
            f"not an OTLP ExportMetricsServiceRequest: an attribute is malformed: {exc}"
        ) from None


def text(value: bytes, what: str) -> str:
    """A string field read as bytes; `PayloadError` when it is not UTF-8 (protobuf requires it)."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise PayloadError(f"not an OTLP ExportMetricsServiceRequest: {what} is not valid UTF-8") from None


def _value(message: Any) -> float | None:
    """The `value` oneof of a number point or exemplar (as_int or as_double); None when neither is set."""
    if message.HasField("as_int"):
        return float(message.as_int)
    if message.HasField("as_double"):
        return float(message.as_double)
    return None


def _text_value(values: dict[str, Any], key: str) -> str:
    found = values.get(key)
    return found if isinstance(found, str) else ""


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise Refused(f"{what} must be finite, not {value}")
    return value


def _times(point: Any) -> tuple[int, int]:
    """(time_us, start_us) of a data point; `Refused` without a time or with a start after it."""
    time_ns, start_ns = point.time_unix_nano, point.start_time_unix_nano
    if not time_ns:
        raise Refused("time_unix_nano is missing")
    if start_ns > time_ns:
        raise Refused("start_time_unix_nano is after time_unix_nano")
    return time_ns // 1000, start_ns // 1000


def _optional(point: Any, field: str) -> float | None:
    if not point.HasField(field):
        return None
    return _finite(getattr(point, field), field)


def _buckets(counts: list[int], what: str) -> list[int]:
    if len(counts) > MAX_BUCKETS:
        raise Refused(f"{what} holds {len(counts)} buckets, more than {MAX_BUCKETS}")
    return counts


# ---- points by kind: each returns the row's values after series_key, time_us and start_us ----


def _number(point: Any, kind: Kind, monotonic: bool) -> tuple[Any, ...]:
    value = _value(point)
    if value is None:
        raise Refused("a number data point without a value (as_int or as_double)")
    if kind == "sum":
        _finite(value, "a sum's value")
        if monotonic and value < 0:
            raise Refused(f"a monotonic sum cannot be negative, got {value}")
    return (value, *(None,) * 15)


@lru_cache(maxsize=256)  # a histogram's bounds are the same at every point
def _increasing(bounds: tuple[float, ...]) -> bool:
    """Whether explicit bounds are finite and strictly increasing."""
    return all(map(math.isfinite, bounds)) and all(map(operator.lt, bounds, bounds[1:]))


def _histogram(point: Any, kind: Kind, monotonic: bool) -> tuple[Any, ...]:
    counts = _buckets(list(point.bucket_counts), "bucket_counts")
    bounds = list(point.explicit_bounds)
    if counts or bounds:
        if len(counts) != len(bounds) + 1:
            raise Refused(
                f"{len(counts)} bucket_counts for {len(bounds)} explicit_bounds: there must be one count more "
                "than bounds"
            )
        if not _increasing(tuple(bounds)):
            raise Refused("explicit_bounds must be finite and strictly increasing")
        if sum(counts) != point.count:
            raise Refused(f"the bucket counts add up to {sum(counts)}, not the point's count {point.count}")
    total = _optional(point, "sum")
    low, high = _optional(point, "min"), _optional(point, "max")
    return (None, point.count, total, low, high, bounds or None, counts or None, *(None,) * 9)


def _exponential(point: Any, kind: Kind, monotonic: bool) -> tuple[Any, ...]:
    scale = point.scale
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise Refused(f"scale must be between {MIN_SCALE} and {MAX_SCALE}, got {scale}")
    threshold = _finite(point.zero_threshold, "zero_threshold")
    if threshold < 0:
        raise Refused(f"zero_threshold cannot be negative, got {threshold}")
    sides = []
    for name in ("positive", "negative"):
        buckets = getattr(point, name)
        counts = _buckets(list(buckets.bucket_counts), f"{name}.bucket_counts")
        offset = buckets.offset
        if counts and (offset + len(counts)) * 2.0**-scale > MAX_EXPONENT:
            raise Refused(f"{name} buckets reach beyond the largest double (offset {offset}, scale {scale})")
        sides.append((offset, counts))
    (positive_offset, positive), (negative_offset, negative) = sides
    total_count = point.zero_count + sum(positive) + sum(negative)
    if total_count != point.count:
        raise Refused(
            f"zero_count and the bucket counts add up to {total_count}, not the point's count {point.count}"
        )
    total = _optional(point, "sum")
    low, high = _optional(point, "min"), _optional(point, "max")
    return (
        None,
        point.count,
        total,
        low,
        high,
        None,
        None,
        scale,
        point.zero_count,
        threshold,
        positive_offset,
        positive,
        negative_offset,
        negative,
        None,
        None,
    )


def _summary(point: Any, kind: Kind, monotonic: bool) -> tuple[Any, ...]:
    quantiles, values = [], []
    for item in point.quantile_values:
        if not 0.0 <= item.quantile <= 1.0:
            raise Refused(f"a summary quantile must be between 0 and 1, got {item.quantile}")
        if math.isnan(item.value):
            raise Refused(f"the value of quantile {item.quantile} is NaN")
        quantiles.append(item.quantile)
        values.append(item.value)
    total = _finite(point.sum, "a summary's sum")
    return (None, point.count, total, None, None, *(None,) * 9, quantiles or None, values or None)


_POINTS: dict[str, Callable[[Any, Kind, bool], tuple[Any, ...]]] = {
    "sum": _number,
    "gauge": _number,
    "histogram": _histogram,
    "exponential_histogram": _exponential,
    "summary": _summary,
}


def _exemplars(point: Any, time_us: int) -> list[tuple[int, float, bytes | None, bytes | None, str]]:
    """(time, value, trace id, span id, attributes) of each exemplar; `Refused` for a bad one."""
    found = []
    for index, exemplar in enumerate(point.exemplars):
        value = _value(exemplar)
        if value is None:
            raise Refused(f"exemplar {index} has no value")
        _finite(value, f"exemplar {index}'s value")
        trace_id, span_id = exemplar.trace_id, exemplar.span_id
        if len(trace_id) not in (0, 16) or len(span_id) not in (0, 8):
            raise Refused(f"exemplar {index}: trace_id must be 16 bytes and span_id 8 (or both absent)")
        when = exemplar.time_unix_nano // 1000 or time_us
        labels = attributes_json(raw_attributes(exemplar.filtered_attributes))
        found.append((when, value, trace_id or None, span_id or None, labels))
    return found


# ---- the walk ----------------------------------------------------------------------------------


# Series by instrument (resource, scope, name, kind, temporality, monotonic, unit, description), then
# by the point's serialized attributes: most points belong to a series seen in an earlier request.
_SERIES: dict[tuple[Any, ...], dict[tuple[bytes, ...], Series]] = {}
_remembered = [0]  # series in `_SERIES`
_RESOURCES: dict[bytes, tuple[str, str, str]] = {}  # serialized resource → service, instance, attributes


def _resource(raw: bytes) -> tuple[str, str, str]:
    """The service, instance and attributes (JSON) of a serialized Resource; `PayloadError` if malformed."""
    found = _RESOURCES.get(raw)
    if found is None:
        try:
            values = attributes(Resource.FromString(raw).attributes)
        except (DecodeError, RecursionError) as exc:
            raise PayloadError(
                f"not an OTLP ExportMetricsServiceRequest: a resource is malformed: {exc}"
            ) from None
        service = _text_value(values, "service.name") or UNKNOWN_SERVICE
        found = (service, _text_value(values, "service.instance.id"), attributes_json(values))
        if len(_RESOURCES) >= CACHE_LIMIT:
            _RESOURCES.clear()
        _RESOURCES[raw] = found
    return found


def _instrument_series(instrument: tuple[Any, ...]) -> dict[tuple[bytes, ...], Series]:
    """The cache of one instrument's series (bounded: a sender inventing series cannot grow memory)."""
    known = _SERIES.get(instrument)
    if known is None:
        if len(_SERIES) >= CACHE_LIMIT or _remembered[0] >= SERIES_LIMIT:
            _SERIES.clear()
            _remembered[0] = 0
        known = _SERIES[instrument] = {}
    return known


def _remember(known: dict[tuple[bytes, ...], Series], raw: tuple[bytes, ...], series: Series) -> None:
    """Keep a series found by its attributes' bytes, while the cache has room (see `SERIES_LIMIT`)."""
    if _remembered[0] < SERIES_LIMIT:
        known[raw] = series
        _remembered[0] += 1


class _Decoder:
    """Walks one request's resources, scopes and metrics into a batch, counting refusals."""

    def __init__(self) -> None:
        self.batch = MetricBatch()
        self.reasons: list[str] = []

    def refuse(self, count: int, name: str, reason: str) -> None:
        self.batch.rejected += count
        message = f"metric {name!r}: {reason}" if name else f"a metric without a name: {reason}"
        if len(self.reasons) < _MAX_REASONS and message not in self.reasons:
            self.reasons.append(message)

    def finish(self) -> MetricBatch:
        self.batch.rejection = "; ".join(self.reasons)
        return self.batch

    def resource(self, resource_metrics: Any) -> None:
        raw = resource_metrics.resource
        service, instance, resource = _resource(raw)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                self.metric(metric, (raw, scope), service, instance, resource)

    def metric(
        self, metric: Any, owner: tuple[bytes, bytes], service: str, instance: str, resource: str
    ) -> None:
        name = text(metric.name, "a metric name")
        kind = next((k for k in KINDS if metric.HasField(k)), None)
        if kind is None:
            self.refuse(1, name, f"holds no data of a known kind ({', '.join(KINDS)})")
            return
        data = getattr(metric, kind)
        points = data.data_points
        if not name:
            self.refuse(len(points), "", "every metric needs a name")
            return
        temporality: Temporality = ""
        if kind in ("sum", "histogram", "exponential_histogram"):
            found = _TEMPORALITIES.get(data.aggregation_temporality)
            if found is None:
                self.refuse(len(points), name, "aggregation_temporality must be DELTA or CUMULATIVE")
                return
            temporality = found
        monotonic = kind == "sum" and data.is_monotonic
        walk = _POINTS[kind]
        known = _instrument_series(
            (*owner, metric.name, kind, temporality, monotonic, metric.unit, metric.description)
        )
        for point in points:
            if point.flags & NO_RECORDED_VALUE:
                continue
            try:
                time_us, start_us = _times(point)
                values = walk(point, kind, monotonic)
                exemplars = _exemplars(point, time_us) if kind != "summary" else []
            except Refused as exc:
                self.refuse(1, name, str(exc))
                continue
            raw = tuple(point.attributes)
            series = known.get(raw)
            if series is None:
                series = Series(
                    service=service,
                    instance=instance,
                    name=name,
                    kind=kind,
                    temporality=temporality,
                    monotonic=monotonic,
                    scope=text(owner[1], "a scope name"),
                    attributes=attributes_json(raw_attributes(raw)),
                    unit=text(metric.unit, "a unit"),
                    description=masked(text(metric.description, "a description")),
                    resource=resource,
                )
                _remember(known, raw, series)
            key = series.key
            self.batch.series.setdefault(key, series)
            row: PointRow = (key, time_us, start_us, *values)
            self.batch.points.append(row)
            for exemplar in exemplars:
                self.batch.exemplars.append((key, *exemplar))
