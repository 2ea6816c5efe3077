"""Metrics go over OTLP with the values `/metrics` serves: the prometheus_client registry, bridged."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from boutique.mesh.export_queue import QueueSettings, SendingQueue
from boutique.mesh.metric_export import MetricsBridge, encode_registry
from boutique.mesh.metrics import CallStats
from boutique.mesh.otlp_send import LOGS, METRICS, OtlpTarget
from boutique.mesh.settings import MeshSettings, SettingsError
from tests.mesh.otlp_receiver import OtlpReceiver, plain, wait_for

RESOURCE = Resource.create({"service.name": "shop-test", "service.instance.id": "shop-test-1"})
FAST = QueueSettings(retry_initial=0.05, retry_max=0.2, shutdown_timeout=1.0)
Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def busy_registry() -> tuple[CollectorRegistry, Counter]:
    """A registry holding every kind of family, the mesh's own call statistics among them, with values."""
    registry = CollectorRegistry()
    orders = Counter("shop_orders", "Orders placed.", ["currency"], registry=registry)
    orders.labels("EUR").inc(3)
    orders.labels("USD").inc(2.5)
    Gauge("shop_carts_open", "Carts open now.", registry=registry).set(7)
    latency = Histogram(
        "shop_render_seconds", "Render time.", ["page"], buckets=(0.01, 0.1, 1.0), registry=registry
    )
    for page, seconds in (("home", 0.005), ("home", 0.05), ("home", 3.0), ("cart", 0.5)):
        latency.labels(page).observe(seconds)
    sizes = Summary("shop_mail_bytes", "Mail sizes.", registry=registry)
    sizes.observe(1200)
    sizes.observe(800)
    Info("shop_build", "Build.", registry=registry).info({"version": "9.9.9"})
    calls = CallStats(
        ("grpc_server_handled", "RPCs.", ("grpc_service", "grpc_method", "grpc_code")),
        ("grpc_server_handling_seconds", "RPC time.", ("grpc_service", "grpc_method")),
    )
    registry.register(calls)
    for code, seconds in (("OK", 0.002), ("OK", 0.03), ("NOT_FOUND", 0.7)):
        calls.count("hipstershop.CartService", "GetCart", code).inc()
        calls.latency("hipstershop.CartService", "GetCart").observe(seconds)
    return registry, orders


def served(registry: CollectorRegistry) -> Values:
    """Every sample `/metrics` would serve from `registry` (text format, parsed), but `_created`."""
    found: Values = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def as_served(request: ExportMetricsServiceRequest) -> Values:
    """The OTLP metrics turned back into Prometheus samples by the documented naming."""
    found: Values = {}
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        kind = metric.WhichOneof("data")
        for point in getattr(metric, kind).data_points:
            labels = {kv.key: str(plain(kv.value)) for kv in point.attributes}

            def put(name: str, value: float, **more: str) -> None:
                found[(name, tuple(sorted({**labels, **more}.items())))] = value  # noqa: B023

            if kind == "sum":
                put(f"{metric.name}_total", point.as_double)
            elif kind == "gauge":
                put(metric.name, point.as_double)
            elif kind == "histogram":
                running = 0
                for bound, count in zip([*point.explicit_bounds, math.inf], point.bucket_counts, strict=True):
                    running += count
                    put(f"{metric.name}_bucket", float(running), le=floatToGoString(bound))
                put(f"{metric.name}_count", float(point.count))
                put(f"{metric.name}_sum", point.sum)
            elif kind == "summary":
                put(f"{metric.name}_count", float(point.count))
                put(f"{metric.name}_sum", point.sum)
    return found


def metric(request: ExportMetricsServiceRequest, name: str) -> pb.Metric:
    (found,) = [m for m in request.resource_metrics[0].scope_metrics[0].metrics if m.name == name]
    return found


def test_every_family_is_sent_with_the_values_the_text_format_serves() -> None:
    registry, _ = busy_registry()
    request, points = encode_registry(registry, RESOURCE, start_ns=1)
    assert as_served(request) == served(registry)
    assert points == sum(
        len(getattr(m, m.WhichOneof("data")).data_points)
        for m in request.resource_metrics[0].scope_metrics[0].metrics
    )
    resource = {kv.key: plain(kv.value) for kv in request.resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "shop-test" and resource["service.instance.id"] == "shop-test-1"


def test_counters_are_monotonic_cumulative_sums_named_without_total() -> None:
    registry, _ = busy_registry()
    request, _ = encode_registry(registry, RESOURCE, start_ns=1)
    sent = metric(request, "shop_orders")
    assert sent.sum.is_monotonic and sent.sum.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_CUMULATIVE
    assert sent.description == "Orders placed."
    created = {
        tuple(s.labels.values()): s.value
        for family in registry.collect()
        if family.name == "shop_orders"
        for s in family.samples
        if s.name.endswith("_created")
    }
    for point in sent.sum.data_points:  # the counter's own creation time starts its series
        currency = str(plain(point.attributes[0].value))
        assert point.start_time_unix_nano == int(created[(currency,)] * 1e9)
    calls = metric(request, "grpc_server_handled")  # a collector without _created: the bridge's start
    assert {p.start_time_unix_nano for p in calls.sum.data_points} == {1}
    assert not [m for m in request.resource_metrics[0].scope_metrics[0].metrics if m.name.endswith("_total")]


def test_histograms_keep_their_bounds_and_summaries_their_count_and_sum() -> None:
    registry, _ = busy_registry()
    request, _ = encode_registry(registry, RESOURCE, start_ns=1)
    render = metric(request, "shop_render_seconds")
    assert render.unit == "s"
    assert render.histogram.aggregation_temporality == pb.AGGREGATION_TEMPORALITY_CUMULATIVE
    home = next(p for p in render.histogram.data_points if plain(p.attributes[0].value) == "home")
    assert list(home.explicit_bounds) == [0.01, 0.1, 1.0]
    assert list(home.bucket_counts) == [1, 1, 0, 1] and home.count == 3
    assert home.sum == pytest.approx(3.055)
    rpc = metric(request, "grpc_server_handling_seconds")
    assert len(rpc.histogram.data_points[0].explicit_bounds) == 13 and rpc.histogram.data_points[0].count == 3
    mail = metric(request, "shop_mail_bytes")
    assert mail.unit == "By" and (mail.summary.data_points[0].count, mail.summary.data_points[0].sum) == (
        2,
        2000,
    )
    build = metric(request, "shop_build_info")
    assert build.gauge.data_points[0].as_double == 1.0


def test_the_bridge_pushes_every_interval_and_a_stop_sends_the_values_at_the_stop() -> None:
    receiver = OtlpReceiver().start()
    registry, orders = busy_registry()
    target = OtlpTarget("http/protobuf", f"{receiver.endpoint}/v1/metrics", timeout=2.0, signal=METRICS)
    queue = SendingQueue(target.transport, FAST, signal=METRICS)
    bridge = MetricsBridge(queue, RESOURCE, 0.2, registry)
    try:
        wait_for(lambda: len(receiver.metrics()) >= 3, "three exports")
        orders.labels("EUR").inc(4)
        bridge.stop()
        queue.shutdown(2.0)
        requests = receiver.metrics()
        last = as_served(requests[-1])
        assert last == served(registry)
        assert last[("shop_orders_total", (("currency", "EUR"),))] == 7.0
        stamps = [metric(r, "shop_carts_open").gauge.data_points[0].time_unix_nano for r in requests]
        gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]
        print(f"\n{len(requests)} exports, gaps {[round(g, 3) for g in gaps]} s")
        assert all(gap >= 0.19 for gap in gaps[:-1])  # never sooner than the interval (the stop's may be)
    finally:
        bridge.stop()
        queue.shutdown(1.0)
        receiver.stop()


def test_a_collector_that_fails_does_not_stop_the_exports() -> None:
    class Broken:
        def collect(self) -> Any:
            raise RuntimeError("broken collector")

    receiver = OtlpReceiver().start()
    registry, _ = busy_registry()
    broken = Broken()
    registry.register(broken)  # type: ignore[arg-type]
    target = OtlpTarget("http/protobuf", f"{receiver.endpoint}/v1/metrics", timeout=2.0, signal=METRICS)
    queue = SendingQueue(target.transport, FAST, signal=METRICS)
    bridge = MetricsBridge(queue, RESOURCE, 0.1, registry)
    try:
        wait_for(lambda: bridge.failures >= 2, "tries that failed")
        assert bridge.exports == 0 and receiver.metrics() == []
        registry.unregister(broken)  # type: ignore[arg-type]
        wait_for(lambda: receiver.metrics(), "an export once the collector is gone")
    finally:
        bridge.stop()
        queue.shutdown(1.0)
        receiver.stop()


def test_switches_interval_and_targets_come_from_the_environment() -> None:
    default = MeshSettings.from_env({}).signals
    assert (default.logs, default.metrics, default.metrics_interval) == (True, True, 10.0)
    assert default.logs_target == OtlpTarget("grpc", "http://localhost:4317", signal=LOGS)
    assert default.metrics_target.signal == METRICS
    read = lambda **env: MeshSettings.from_env(env).signals  # noqa: E731
    assert read(BOUTIQUE_METRICS_EXPORT_INTERVAL="2").metrics_interval == 2.0
    assert read(BOUTIQUE_METRICS_EXPORT_INTERVAL="500ms").metrics_interval == 0.5
    assert read(OTEL_METRIC_EXPORT_INTERVAL="1500").metrics_interval == 1.5
    both = read(OTEL_METRIC_EXPORT_INTERVAL="1500", BOUTIQUE_METRICS_EXPORT_INTERVAL="3")
    assert both.metrics_interval == 3.0
    for bad in ("0", "soon"):
        with pytest.raises(SettingsError, match="BOUTIQUE_METRICS_EXPORT_INTERVAL"):
            read(BOUTIQUE_METRICS_EXPORT_INTERVAL=bad)
    with pytest.raises(SettingsError, match="OTEL_LOGS_EXPORTER must be one of otlp, none"):
        read(OTEL_LOGS_EXPORTER="kafka")
    off = read(OTEL_LOGS_EXPORTER="none", OTEL_METRICS_EXPORTER="prometheus")
    assert (off.logs, off.metrics) == (False, False)
    assert (read(OTEL_TRACES_EXPORTER="none").logs, read(OTEL_TRACES_EXPORTER="none").metrics) == (
        False,
        False,
    )
    assert read(OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="otlp").logs
    assert not read(OTEL_SDK_DISABLED="true", OTEL_LOGS_EXPORTER="otlp").logs
    http = read(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf"
    )
    assert http.logs_target.endpoint == "http://collector:4318/v1/logs"
    assert http.metrics_target.endpoint == "http://collector:4318/v1/metrics"
    split = read(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT="http://logs:9000/ingest",
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_METRICS_HEADERS="tenant=shop",
    )
    assert split.logs_target.endpoint == "http://logs:9000/ingest"
    assert split.metrics_target.endpoint == "http://collector:4317"
    assert split.metrics_target.headers == (("tenant", "shop"),) and split.logs_target.headers == ()
