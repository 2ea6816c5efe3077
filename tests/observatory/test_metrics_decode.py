"""OTLP metrics decoding: every data point kind from the real SDK, protobuf and JSON alike, refusals, redaction."""

from __future__ import annotations

import base64
import json
import time
from typing import Any, TypeVar

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from boutique.observatory.metrics.decode import decode, decode_json
from boutique.observatory.metrics.model import POINT_COLUMNS, MetricBatch
from boutique.observatory.otlp.values import to_any
from boutique.observatory.receivers.otlp_proto import PayloadError

CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NOW_NS = time.time_ns()
CARD = "4111 1111 1111 1111"
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
P = TypeVar("P", pb.NumberDataPoint, pb.HistogramDataPoint, pb.ExponentialHistogramDataPoint)


# ---- building requests (shared with the other metrics tests) -----------------------------------


def kv(key: str, value: Any) -> KeyValue:
    """One attribute of a plain value."""
    return KeyValue(key=key, value=to_any(value))


def with_attributes(point: P, attrs: dict[str, Any] | None) -> P:
    """`point` with `attrs` appended to its attributes."""
    point.attributes.extend(kv(k, v) for k, v in (attrs or {}).items())
    return point


def temporal_metric(name: str, unit: str, kind: str, points: list[Any], temporality: int) -> pb.Metric:
    """A metric whose `kind` (sum, histogram, exponential_histogram) holds `points` of `temporality`."""
    metric = pb.Metric(name=name, unit=unit)
    data = getattr(metric, kind)
    data.aggregation_temporality = temporality
    data.data_points.extend(points)
    return metric


def request(*resources: pb.ResourceMetrics) -> ExportMetricsServiceRequest:
    """A request of these resources' metrics."""
    return ExportMetricsServiceRequest(resource_metrics=list(resources))


def resource(
    service: str | None, instance: str | None, *metrics: pb.Metric, scope: str = "tests"
) -> pb.ResourceMetrics:
    """One resource (service.name, service.instance.id when given) holding `metrics` in one scope."""
    found = pb.ResourceMetrics()
    if service is not None:
        found.resource.attributes.append(kv("service.name", service))
    if instance is not None:
        found.resource.attributes.append(kv("service.instance.id", instance))
    found.scope_metrics.add(scope={"name": scope}, metrics=list(metrics))
    return found


def number_point(
    time_us: int, value: float | int, attrs: dict[str, Any] | None = None, start_us: int = 0
) -> pb.NumberDataPoint:
    """A sum or gauge point (an int value as as_int)."""
    point = pb.NumberDataPoint(time_unix_nano=time_us * 1000, start_time_unix_nano=start_us * 1000)
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return with_attributes(point, attrs)


def sum_metric(
    name: str, points: list[pb.NumberDataPoint], temporality: int = CUMULATIVE, monotonic: bool = True
) -> pb.Metric:
    metric = temporal_metric(name, "{request}", "sum", points, temporality)
    metric.sum.is_monotonic = monotonic
    return metric


def gauge_metric(name: str, points: list[pb.NumberDataPoint]) -> pb.Metric:
    metric = pb.Metric(name=name, unit="1")
    metric.gauge.data_points.extend(points)
    return metric


def histogram_point(
    time_us: int,
    bounds: list[float],
    counts: list[int],
    total: float,
    attrs: dict[str, Any] | None = None,
    start_us: int = 0,
) -> pb.HistogramDataPoint:
    point = pb.HistogramDataPoint(
        time_unix_nano=time_us * 1000,
        start_time_unix_nano=start_us * 1000,
        count=sum(counts),
        sum=total,
        explicit_bounds=bounds,
        bucket_counts=counts,
    )
    return with_attributes(point, attrs)


def histogram_metric(
    name: str, points: list[pb.HistogramDataPoint], temporality: int = CUMULATIVE
) -> pb.Metric:
    return temporal_metric(name, "ms", "histogram", points, temporality)


def exponential_point(
    time_us: int,
    scale: int,
    offset: int,
    counts: list[int],
    total: float,
    zero: int = 0,
    start_us: int = 0,
    attrs: dict[str, Any] | None = None,
) -> pb.ExponentialHistogramDataPoint:
    point = pb.ExponentialHistogramDataPoint(
        time_unix_nano=time_us * 1000,
        start_time_unix_nano=start_us * 1000,
        count=sum(counts) + zero,
        sum=total,
        scale=scale,
        zero_count=zero,
    )
    point.positive.offset = offset
    point.positive.bucket_counts.extend(counts)
    return with_attributes(point, attrs)


def exponential_metric(
    name: str, points: list[pb.ExponentialHistogramDataPoint], temporality: int = CUMULATIVE
) -> pb.Metric:
    return temporal_metric(name, "ms", "exponential_histogram", points, temporality)


def otlp_json(message: ExportMetricsServiceRequest) -> bytes:
    """The request in OTLP/JSON: the protobuf JSON mapping with exemplar ids as hex."""
    document = json_format.MessageToDict(message)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("traceId", "spanId"):
                if key in node:
                    node[key] = base64.b64decode(node[key]).hex()
            for value in node.values():
                hexify(value)
        elif isinstance(node, list):
            for value in node:
                hexify(value)

    hexify(document)
    return json.dumps(document).encode()


def column(batch: MetricBatch, name: str) -> list[Any]:
    """One column of the batch's point rows."""
    index = POINT_COLUMNS.index(name)
    return [row[index] for row in batch.points]


def by_name(batch: MetricBatch) -> dict[str, list[dict[str, Any]]]:
    """The batch's points as dicts, by metric name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in batch.points:
        series = batch.series[row[0]]
        found.setdefault(series.name, []).append(dict(zip(POINT_COLUMNS, row, strict=True)))
    return found


# ---- the real SDK's metrics --------------------------------------------------------------------


def sdk_request() -> ExportMetricsServiceRequest:
    """Every instrument kind of the OpenTelemetry SDK, recorded with known values, as one request."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "cart", "service.instance.id": "cart-1"}),
        views=[View(instrument_name="exp.*", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("tests.metrics", "1.0")
    meter.create_counter("requests", unit="{request}", description="requests served").add(
        37, {"route": "/cart", "ok": True}
    )
    updown = meter.create_up_down_counter("in_flight")
    updown.add(5)
    updown.add(-2)
    meter.create_gauge("temperature").set(21.5, {"room": "a"})
    histogram = meter.create_histogram("latency", unit="ms")
    for value in range(100):
        histogram.record(value, {"route": "/cart"})
    exponential = meter.create_histogram("exp.latency", unit="ms")
    for value in range(1, 101):
        exponential.record(value * 1.5)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return encode_metrics(data)


def test_the_sdk_instruments_decode_with_their_values_from_protobuf_and_json_alike() -> None:
    message = sdk_request()
    batch = decode(message.SerializeToString())
    assert batch.rejected == 0 and len(batch) == 5
    points = by_name(batch)
    assert points["requests"][0]["value"] == 37
    assert points["in_flight"][0]["value"] == 3
    assert points["temperature"][0]["value"] == 21.5
    latency = points["latency"][0]
    assert latency["count"] == 100 and latency["sum"] == sum(range(100))
    assert latency["min"] == 0 and latency["max"] == 99
    assert len(latency["counts"]) == len(latency["bounds"]) + 1 and sum(latency["counts"]) == 100
    exponential = points["exp.latency"][0]
    assert exponential["count"] == 100 and exponential["sum"] == pytest.approx(1.5 * 5050)
    assert exponential["zero_count"] + sum(exponential["positive_counts"]) == 100
    assert exponential["bounds"] is None and -10 <= exponential["scale"] <= 20
    kinds = {s.name: (s.kind, s.temporality, s.monotonic) for s in batch.series.values()}
    assert kinds == {
        "requests": ("sum", "cumulative", True),
        "in_flight": ("sum", "cumulative", False),
        "temperature": ("gauge", "", False),
        "latency": ("histogram", "cumulative", False),
        "exp.latency": ("exponential_histogram", "cumulative", False),
    }
    requests = next(s for s in batch.series.values() if s.name == "requests")
    assert (requests.service, requests.instance, requests.scope) == ("cart", "cart-1", "tests.metrics")
    assert json.loads(requests.attributes) == {"route": "/cart", "ok": True}
    assert requests.unit == "{request}" and requests.description == "requests served"
    assert json.loads(requests.resource)["service.name"] == "cart"
    for row in batch.points:
        assert abs(row[1] - time.time_ns() // 1000) < 600_000_000 and 0 <= row[2] <= row[1]  # the SDK's clock
        assert row[2] > 0 or batch.series[row[0]].kind == "gauge"  # a gauge has no start

    from_json = decode_json(otlp_json(message))
    assert from_json.points == batch.points
    assert from_json.series == batch.series


def test_series_are_keyed_by_service_instance_instrument_and_attributes() -> None:
    t = NOW_NS // 1000
    batch = decode(
        request(
            resource(
                "cart",
                "cart-1",
                sum_metric("hits", [number_point(t, 1, {"a": "x"}), number_point(t, 2, {"a": "y"})]),
            ),
            resource("cart", "cart-2", sum_metric("hits", [number_point(t, 3, {"a": "x"})])),
            resource(None, None, sum_metric("hits", [number_point(t, 4, {"a": "x"})])),
        ).SerializeToString()
    )
    assert len(batch.series) == 4 and len(set(column(batch, "series_key"))) == 4
    owners = sorted((s.service, s.instance) for s in batch.series.values())
    assert owners == [("cart", "cart-1"), ("cart", "cart-1"), ("cart", "cart-2"), ("unknown_service", "")]
    again = decode(
        request(
            resource("cart", "cart-1", sum_metric("hits", [number_point(t + 1, 5, {"a": "x"})]))
        ).SerializeToString()
    )
    assert (
        column(again, "series_key")[0] == column(batch, "series_key")[0]
    )  # the same series in a later request


# ---- refusals ----------------------------------------------------------------------------------


def test_bad_points_are_refused_one_by_one_and_the_good_ones_kept() -> None:
    t = NOW_NS // 1000
    no_value = pb.NumberDataPoint(time_unix_nano=t * 1000)
    gap = pb.NumberDataPoint(time_unix_nano=t * 1000, flags=1)  # no recorded value: skipped, not refused
    bad_bucket_count = histogram_point(t, [1.0, 2.0], [1, 1], 3.0)
    unsorted_bounds = histogram_point(t, [2.0, 1.0], [1, 1, 1], 3.0)
    wrong_count = histogram_point(t, [1.0], [1, 1], 3.0)
    wrong_count.count = 5
    bad_scale = exponential_point(t, 21, 0, [1], 1.0)
    exp_wrong_count = exponential_point(t, 0, 0, [1, 2], 3.0)
    exp_wrong_count.count = 4
    nan_sum = histogram_point(t, [1.0], [1, 0], float("nan"))
    bad_exemplar = number_point(t, 9)
    bad_exemplar.exemplars.add(time_unix_nano=t * 1000, as_double=1.0, trace_id=b"short", span_id=SPAN)
    summary = pb.Metric(name="summary")
    summary.summary.data_points.add(time_unix_nano=t * 1000, count=1, sum=1.0).quantile_values.add(
        quantile=1.5, value=1.0
    )
    unspecified = pb.Metric(name="unspecified")
    unspecified.sum.data_points.add(time_unix_nano=t * 1000, as_int=1)
    unknown_kind = pb.Metric(name="unknown")  # no data at all: an unknown (newer) kind arrives like this
    nameless = sum_metric("", [number_point(t, 1), number_point(t, 2)])
    message = request(
        resource(
            "cart",
            "cart-1",
            sum_metric("good", [number_point(t, 1), no_value, gap, number_point(0, 2)]),
            sum_metric(
                "counter",
                [number_point(t, -1.0), number_point(t, float("inf")), number_point(t, 3, start_us=t + 1)],
            ),
            gauge_metric("gauge", [number_point(t, float("nan"))]),  # a gauge may be NaN
            histogram_metric(
                "hist",
                [
                    bad_bucket_count,
                    unsorted_bounds,
                    wrong_count,
                    nan_sum,
                    histogram_point(t, [1.0], [2, 1], 4.0),
                ],
            ),
            exponential_metric("exp", [bad_scale, exp_wrong_count, exponential_point(t, 0, 0, [1, 2], 3.0)]),
            sum_metric("exemplars", [bad_exemplar]),
            summary,
            unspecified,
            unknown_kind,
            nameless,
        )
    )
    batch = decode(message.SerializeToString())
    kept = {name: len(points) for name, points in by_name(batch).items()}
    assert kept == {"good": 1, "gauge": 1, "hist": 1, "exp": 1}
    # good: no value, no time; counter: negative, infinite, start after time; hist: 4; exp: 2;
    # exemplars: 1; summary: 1; unspecified: 1; unknown: 1; nameless: 2
    assert batch.rejected == 2 + 3 + 4 + 2 + 1 + 1 + 1 + 1 + 2
    for words in ("without a value", "time_unix_nano is missing", "cannot be negative"):
        assert words in batch.rejection
    everything = decode_reasons(message)
    for words in (
        "must be finite",
        "start_time_unix_nano is after time_unix_nano",
        "one count more than bounds",
        "strictly increasing",
        "add up to 2, not the point's count 5",
        "scale must be between -10 and 20",
        "trace_id must be 16 bytes",
        "quantile must be between 0 and 1",
        "aggregation_temporality must be DELTA or CUMULATIVE",
        "no data of a known kind",
        "needs a name",
    ):
        assert words in everything, words


def decode_reasons(message: ExportMetricsServiceRequest) -> str:
    """Every refusal reason of the request (a batch keeps the first few): each metric decoded alone."""
    reasons = []
    for metric in message.resource_metrics[0].scope_metrics[0].metrics:
        reasons.append(decode(request(resource("cart", None, metric)).SerializeToString()).rejection)
    return "; ".join(reasons)


def field(number: int, body: bytes) -> bytes:
    """One length-delimited protobuf field (the lengths here stay below 128)."""
    assert len(body) < 128
    return bytes([number << 3 | 2, len(body)]) + body


def with_raw_attribute(attribute: bytes) -> bytes:
    """A request of one gauge point whose one attribute is these KeyValue bytes, as they would arrive."""
    point = pb.NumberDataPoint(time_unix_nano=NOW_NS, as_int=1).SerializeToString() + field(7, attribute)
    metric = field(1, b"x") + field(5, field(1, point))
    return field(1, field(2, field(2, metric)))


def nested_value(depth: int) -> bytes:
    """A KeyValue whose value nests arrays `depth` deep (varint lengths)."""
    body = b""
    for _ in range(depth):
        array = b"\x0a" + _varint(len(body)) + body  # ArrayValue.values
        body = b"\x2a" + _varint(len(array)) + array  # AnyValue.array_value
    return b"\x0a\x01k\x12" + _varint(len(body)) + body


def _varint(number: int) -> bytes:
    out = b""
    while number >= 0x80:
        out += bytes([number & 0x7F | 0x80])
        number >>= 7
    return out + bytes([number])


def nested_request(depth: int) -> bytes:
    """A request of one gauge point whose attribute nests arrays `depth` deep (lengths past 127)."""
    top = nested_value(depth)
    point = pb.NumberDataPoint(time_unix_nano=NOW_NS, as_int=1).SerializeToString()
    point += b"\x3a" + _varint(len(top)) + top
    gauge = b"\x0a" + _varint(len(point)) + point
    metric = b"\x0a\x01x" + b"\x2a" + _varint(len(gauge)) + gauge
    scope = b"\x12" + _varint(len(metric)) + metric
    resource_metrics = b"\x12" + _varint(len(scope)) + scope
    return b"\x0a" + _varint(len(resource_metrics)) + resource_metrics


def test_raw_attributes_are_checked_when_first_seen() -> None:
    assert decode(with_raw_attribute(kv("a", "b").SerializeToString())).rejected == 0
    with pytest.raises(PayloadError, match="attribute is malformed"):
        decode(with_raw_attribute(b"\x0a\x01a\x12\x03\x0a\x01\xff"))  # a string value that is not UTF-8
    (series,) = decode(nested_request(20)).series.values()
    assert series.attributes.startswith('{"k":[[[[')
    with pytest.raises(PayloadError, match="attribute is malformed"):
        decode(nested_request(200))  # deeper than protobuf parses


@pytest.mark.parametrize(
    ("payload", "decoder", "words"),
    [
        (b"\xff\xff\xff", decode, "not an OTLP ExportMetricsServiceRequest"),
        (
            request(resource("a", None, sum_metric("x", [number_point(1, 1)]))).SerializeToString()[:-3],
            decode,
            "not an OTLP",
        ),
        (b"{not json", decode_json, "not valid JSON"),
        (b"[1, 2]", decode_json, "must be a JSON object"),
        (b'{"resourceMetrics": {"a": 1}}', decode_json, "must be a JSON array"),
        (
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x", "sum": {"dataPoints": [5]}}]}]}]}',
            decode_json,
            "must be a JSON object",
        ),
        (
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x", "gauge": {"dataPoints": '
            b'[{"timeUnixNano": "1", "asInt": "1", "exemplars": [{"traceId": "zz", "asInt": "1"}]}]}}]}]}]}',
            decode_json,
            "is not hex",
        ),
        (
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": 5, "gauge": {}}]}]}]}',
            decode_json,
            "not an OTLP/JSON",
        ),
        (
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "x", "gauge": {"dataPoints": [{"asInt": "x1"}]}}]}]}]}',
            decode_json,
            "not an OTLP/JSON",
        ),
        (b"[" * 100_000 + b"]" * 100_000, decode_json, "JSON"),
    ],
)
def test_malformed_payloads_are_payload_errors_naming_the_problem(
    payload: bytes, decoder: Any, words: str
) -> None:
    with pytest.raises(PayloadError, match=words):
        decoder(payload)


def test_exemplars_keep_their_trace_and_span_and_json_ids_are_hex() -> None:
    t = NOW_NS // 1000
    point = histogram_point(t, [10.0], [1, 0], 4.0)
    point.exemplars.add(
        time_unix_nano=(t - 5) * 1000,
        as_double=4.0,
        trace_id=TRACE,
        span_id=SPAN,
        filtered_attributes=[kv("user", CARD)],
    )
    message = request(resource("checkout", "c-1", histogram_metric("latency", [point])))
    for batch in (decode(message.SerializeToString()), decode_json(otlp_json(message))):
        assert len(batch.exemplars) == 1
        key, when, value, trace_id, span_id, labels = batch.exemplars[0]
        assert (key, when, value, trace_id, span_id) == (
            column(batch, "series_key")[0],
            t - 5,
            4.0,
            TRACE,
            SPAN,
        )
        assert json.loads(labels) == {"user": "************1111"}


def test_card_numbers_are_masked_in_attributes_resources_and_descriptions() -> None:
    t = NOW_NS // 1000
    metric = sum_metric("payments", [number_point(t, 1, {"card": CARD, "nested": "x", "amount": 5})])
    metric.description = f"charges to {CARD}"
    res = resource("payment", "p-1", metric)
    res.resource.attributes.append(kv("owner.card", "4111-1111-1111-1111"))
    batch = decode(request(res).SerializeToString())
    (series,) = batch.series.values()
    assert CARD not in series.attributes and "************1111" in series.attributes
    assert "4111-1111-1111-1111" not in series.resource and "1111" in series.resource
    assert series.description == "charges to ************1111"
    assert json.loads(series.attributes)["amount"] == 5  # numbers are not text to mask
