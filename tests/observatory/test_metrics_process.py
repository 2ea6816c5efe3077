"""Metrics in a real observatory process: the OpenTelemetry SDK's exporters in, the query API out, restarts,
and bad payloads refused without storing anything."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import grpc
import httpx
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tests.observatory import test_metrics_decode as build
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.test_metrics_decode import CARD

PROTOBUF = {"Content-Type": "application/x-protobuf"}
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
COUNTS = (10, 20, 7)  # the counter's increments, one export after each: 37 in all
VALUES = [float(v) for v in range(1, 101)]  # the histograms' observations


@dataclass
class Sent:
    """What one SDK run recorded and exported."""

    service: str
    temporality: str
    start_us: int  # before the meter provider was made
    end_us: int  # after its last export


def meter_provider(
    observatory: ObservatoryProcess, transport: str, temporality: str, service: str
) -> MeterProvider:
    """A provider whose periodic reader exports only when flushed, over `transport` with the temporality."""
    preferred = {}
    if temporality == "delta":  # counters and histograms in deltas; up-down counters stay cumulative
        preferred = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    exporter: Any
    if transport == "http":
        endpoint = f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1/metrics"
        exporter = HttpMetricExporter(endpoint=endpoint, preferred_temporality=preferred)
    else:
        endpoint = f"127.0.0.1:{observatory.ports['otlp_grpc']}"
        exporter = GrpcMetricExporter(endpoint=endpoint, insecure=True, preferred_temporality=preferred)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": service, "service.instance.id": f"{service}-1"}),
        views=[View(instrument_name="exp.*", aggregation=ExponentialBucketHistogramAggregation())],
    )


def record(observatory: ObservatoryProcess, transport: str, temporality: str) -> Sent:
    """Record known values with every instrument kind and export them in three flushes."""
    service = f"shop-{transport}-{temporality}"
    start = time.time_ns() // 1000
    provider = meter_provider(observatory, transport, temporality, service)
    meter = provider.get_meter("tests.metrics.process")
    counter = meter.create_counter("orders", unit="{order}")
    updown = meter.create_up_down_counter("carts.open")
    gauge = meter.create_gauge("queue.depth")
    histogram = meter.create_histogram("checkout.duration", unit="ms")
    exponential = meter.create_histogram("exp.checkout.duration", unit="ms")
    for round_number, amount in enumerate(COUNTS):
        counter.add(amount, {"currency": "EUR", "card": CARD})
        updown.add(5 if round_number == 0 else -1)
        gauge.set(21.5 * (round_number + 1))
        for value in VALUES[round_number::3]:
            histogram.record(value, {"method": "PlaceOrder"})
            exponential.record(value * 1.5)
        assert provider.force_flush()
        time.sleep(0.05)  # the next export is later in time
    provider.shutdown()
    return Sent(service, temporality, start, time.time_ns() // 1000 + 1)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Sent]]]:
    """An observatory that received the SDK's metrics over HTTP and gRPC, cumulative and delta; stopped."""
    data = tmp_path_factory.mktemp("metrics") / "data"
    observatory = start_observatory(data)
    try:
        sent = [record(observatory, t, k) for t in ("http", "grpc") for k in ("cumulative", "delta")]
    finally:
        assert observatory.stop() == 0, observatory.text()[-2000:]
    yield data, sent


@pytest.fixture(scope="module")
def restarted(
    pushed: tuple[Path, list[Sent]],
) -> Iterator[tuple[ObservatoryProcess, list[Sent], dict[str, Any]]]:
    """The same data directory served by a new observatory process, and the points as stored on disk."""
    data, sent = pushed
    stored = stored_points(data / "observatory.duckdb")
    observatory = start_observatory(data)
    yield observatory, sent, stored
    observatory.stop()


def stored_points(path: Path) -> dict[str, Any]:
    """(time_us, value or count) of each stored point, by (service, metric name), read from the file itself."""
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.execute(
            "SELECT s.service, s.name, p.time_us, coalesce(p.value, p.count) FROM metric_points p "
            "JOIN metric_series s USING (series_key) ORDER BY p.time_us"
        ).fetchall()
    found: dict[str, Any] = {}
    for service, name, when, value in rows:
        found.setdefault(f"{service}/{name}", []).append((int(when), float(value)))
    return found


def get(observatory: ObservatoryProcess, path: str, **params: Any) -> Any:
    response = httpx.get(
        observatory.query_url + path, params={k: str(v) for k, v in params.items()}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def one_value(data: dict[str, Any]) -> float | None:
    """The value of a one-step query's only series."""
    (series,) = data["series"]
    ((_, value),) = series["points"]
    return value  # type: ignore[no-any-return]


CASES = [("http", "cumulative"), ("http", "delta"), ("grpc", "cumulative"), ("grpc", "delta")]


@pytest.mark.parametrize(("transport", "temporality"), CASES)
def test_sdk_metrics_answer_the_query_api_after_a_restart(
    restarted: tuple[ObservatoryProcess, list[Sent], dict[str, Any]], transport: str, temporality: str
) -> None:
    observatory, sent, stored = restarted
    run = next(s for s in sent if s.service == f"shop-{transport}-{temporality}")
    whole = {
        "service": run.service,
        "start": run.start_us,
        "end": run.end_us,
        "step": run.end_us - run.start_us,
    }

    orders = stored[f"{run.service}/orders"]  # one point per flush (and one more at shutdown if cumulative)
    print(f"{run.service}: orders stored as {orders}")
    totals = (
        [v for _, v in orders]
        if temporality == "cumulative"
        else list(itertools.accumulate(v for _, v in orders))
    )
    assert totals[-1] == sum(COUNTS) and len(orders) >= len(COUNTS)
    # value: the last cumulative total, or the deltas summed; increase over the whole run: 37 either way.
    assert one_value(get(observatory, "/api/metrics/query", name="orders", **whole)) == sum(COUNTS)
    assert one_value(get(observatory, "/api/metrics/query", name="orders", fn="increase", **whole)) == sum(
        COUNTS
    )
    # The rate between the first and the last stored point, from their own timestamps.
    first, last = orders[0][0], orders[-1][0]
    between = {"service": run.service, "start": first, "end": last, "step": last - first}
    rate = one_value(get(observatory, "/api/metrics/query", name="orders", fn="rate", **between))
    assert rate == pytest.approx((totals[-1] - totals[0]) / ((last - first) / 1e6))

    assert one_value(get(observatory, "/api/metrics/query", name="carts.open", **whole)) == 5 - 1 - 1
    assert one_value(get(observatory, "/api/metrics/query", name="queue.depth", **whole)) == 21.5 * 3
    assert (
        one_value(get(observatory, "/api/metrics/query", name="queue.depth", fn="max", **whole)) == 21.5 * 3
    )
    assert one_value(get(observatory, "/api/metrics/query", name="queue.depth", fn="min", **whole)) == 21.5

    histogram = get(observatory, "/api/metrics/query", name="checkout.duration", **whole)
    assert histogram["kind"] == "histogram" and histogram["unit"] == "ms"
    assert one_value(histogram) == len(VALUES)  # count: every observation
    total = get(observatory, "/api/metrics/query", name="checkout.duration", fn="sum", **whole)
    assert one_value(total) == sum(VALUES)
    average = get(observatory, "/api/metrics/query", name="checkout.duration", fn="avg", **whole)
    assert one_value(average) == pytest.approx(sum(VALUES) / len(VALUES))
    median = one_value(
        get(observatory, "/api/metrics/query", name="checkout.duration", fn="quantile", quantile=0.5, **whole)
    )
    assert (
        median is not None and 50 <= median <= 75
    )  # the SDK's default bucket (50, 75] holds the median 50.5

    exponential = get(observatory, "/api/metrics/query", name="exp.checkout.duration", **whole)
    assert exponential["kind"] == "exponential_histogram" and one_value(exponential) == len(VALUES)
    p90 = one_value(
        get(
            observatory,
            "/api/metrics/query",
            name="exp.checkout.duration",
            fn="quantile",
            quantile=0.9,
            **whole,
        )
    )
    expected = 1.5 * 90.5
    assert p90 is not None and abs(p90 - expected) / expected < 0.1  # within the bucket at the SDK's scale

    (orders_series,) = get(observatory, "/api/metrics/series", service=run.service, name="orders")
    assert orders_series["kind"] == "sum" and orders_series["monotonic"] is True
    assert orders_series["temporality"] == temporality
    assert orders_series["labels"] == {
        "card": ["************1111"],
        "currency": ["EUR"],
        "instance": [f"{run.service}-1"],
    }


# ---- refusals ----------------------------------------------------------------------------------


@pytest.fixture
def observatory(tmp_path: Path) -> Iterator[ObservatoryProcess]:
    running = start_observatory(tmp_path / "data", "--max-body", "64KB")
    yield running
    running.stop()


def post(observatory: ObservatoryProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    url = f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1/metrics"
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_malformed_oversized_and_hostile_payloads_get_clear_errors_and_store_nothing(
    observatory: ObservatoryProcess,
) -> None:
    now = time.time_ns() // 1000
    good = build.request(
        build.resource("cart", "cart-1", build.sum_metric("orders", [build.number_point(now, 1)]))
    ).SerializeToString()
    answers = {
        "garbage": post(observatory, b"\x0a\xff\xff\xff\xff", PROTOBUF),
        "bad json": post(observatory, b'{"resourceMetrics": 5}', {"Content-Type": "application/json"}),
        "not json": post(observatory, b"\xff\xfe", {"Content-Type": "application/json"}),
        "oversized": post(observatory, b"\x00" * 70_000, PROTOBUF),
        "gzip bomb": post(
            observatory, gzip.compress(good + b"\x00" * 5_000_000), {**PROTOBUF, "Content-Encoding": "gzip"}
        ),
        "bad gzip": post(observatory, b"\x1f\x8b not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}),
        "content type": post(observatory, good, {"Content-Type": "text/plain"}),
        "empty": post(observatory, b"", PROTOBUF),
    }
    expected = {
        "garbage": (400, "not an OTLP ExportMetricsServiceRequest"),
        "bad json": (400, "must be a JSON array"),
        "not json": (400, "not valid JSON"),
        "oversized": (413, "larger than 65536 bytes"),
        "gzip bomb": (413, "inflated body is larger"),
        "bad gzip": (400, "not valid gzip"),
        "content type": (415, "unsupported Content-Type"),
        "empty": (400, "empty"),
    }
    for case, (status, words) in expected.items():
        response = answers[case]
        assert response.status_code == status, (case, response.text)
        if response.headers["content-type"] == "application/x-protobuf":
            message = RpcStatus.FromString(response.content).message
        else:
            message = response.json()["message"]
        assert words in message, (case, message)

    with grpc.insecure_channel(f"127.0.0.1:{observatory.ports['otlp_grpc']}") as channel:
        export = channel.unary_unary(EXPORT)
        with pytest.raises(grpc.RpcError) as refused:
            export(b"\x0a\xff\xff\xff\xff", timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not an OTLP ExportMetricsServiceRequest" in refused.value.details()
        with pytest.raises(grpc.RpcError) as too_big:
            export(b"\x00" * 70_000, timeout=10)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    assert get(observatory, "/api/metrics/series") == []  # nothing of all that was stored

    # A request with some bad points: the good ones are stored, the others counted as refused.
    bad = build.histogram_point(now, [1.0, 2.0], [1, 1], 3.0)  # two counts for two bounds
    mixed = build.request(
        build.resource(
            "cart",
            "cart-1",
            build.sum_metric("orders", [build.number_point(now, 1), build.number_point(now, -5)]),
        ),
        build.resource("cart", "cart-1", build.histogram_metric("latency", [bad])),
    )
    response = post(observatory, mixed.SerializeToString(), PROTOBUF)
    assert response.status_code == 200
    partial = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_data_points == 2
    assert (
        "cannot be negative" in partial.error_message
        and "one count more than bounds" in partial.error_message
    )
    with grpc.insecure_channel(f"127.0.0.1:{observatory.ports['otlp_grpc']}") as channel:
        answer = ExportMetricsServiceResponse.FromString(
            channel.unary_unary(EXPORT)(mixed.SerializeToString(), timeout=10)
        )
    assert answer.partial_success.rejected_data_points == 2
    assert [(s["name"], s["service"]) for s in get(observatory, "/api/metrics/series")] == [
        ("orders", "cart")
    ]
    json_answer = post(
        observatory, json.dumps({"resourceMetrics": []}).encode(), {"Content-Type": "application/json"}
    )
    assert json_answer.status_code == 200 and json_answer.json() == {}
    values = get(observatory, "/api/metrics/query", name="orders", start=now - 1, end=now + 1, step=2)
    assert values["series"][0]["points"] == [[now + 1, 1.0]]  # stored once per protocol, same time: one point
    # /api/status counts each signal apart: two requests of one good point each, no span, no log record.
    status = httpx.get(f"{observatory.query_url}/api/status", timeout=10).json()
    assert status["signals"]["metrics"] == {"accepted": 2, "refused": 0, "failed": 0, "stored": 2}
    assert (
        status["signals"]["spans"]
        == status["signals"]["logs"]
        == dict.fromkeys(("accepted", "refused", "failed", "stored"), 0)
    )
    assert status["stored_spans"] == 0 and status["queued_items"] == 0
