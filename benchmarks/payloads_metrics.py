"""OTLP metric payloads shaped like the shop's, for the ingest benchmark's metrics row.

Each `ExportMetricsServiceRequest` holds the collections of a few service instances the way each
process's periodic reader exports them (cumulative temporality): per gRPC method and status code an
`rpc.server.duration` histogram (15 explicit buckets, as OpenTelemetry's default boundaries) and an
`rpc.server.requests` counter; per instance a few gauges (memory, CPU utilisation, open connections)
and an up-down counter of requests in flight. Values grow from collection to collection as a running
process's do. `parse_only` is the baseline: the full opentelemetry.proto parse of each payload.

Run alone it measures points stored per second through `Pipeline` + `DuckDBStore` against parse-only:
    python benchmarks/payloads_metrics.py [--points 200000] [--per-request 512]
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, ResourceMetrics
from otlp_payloads import kv, parse_counting

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
BOUNDS = [float(b) for b in (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)]
SERVICES = {  # service → (gRPC service, methods)
    "cartservice": ("hipstershop.CartService", ["AddItem", "GetCart", "EmptyCart"]),
    "currencyservice": ("hipstershop.CurrencyService", ["Convert", "GetSupportedCurrencies"]),
    "productcatalogservice": (
        "hipstershop.ProductCatalogService",
        ["ListProducts", "GetProduct", "SearchProducts"],
    ),
    "checkoutservice": ("hipstershop.CheckoutService", ["PlaceOrder"]),
    "paymentservice": ("hipstershop.PaymentService", ["Charge"]),
    "shippingservice": ("hipstershop.ShippingService", ["GetQuote", "ShipOrder"]),
    "recommendationservice": ("hipstershop.RecommendationService", ["ListRecommendations"]),
    "adservice": ("hipstershop.AdService", ["GetAds"]),
}
INSTANCES = 2
STATUSES = (0, 0, 0, 14)  # OK mostly, UNAVAILABLE sometimes
INTERVAL_NS = 10 * 1_000_000_000  # the shop's export interval


class Instance:
    """One service instance's instruments and their running (cumulative) state."""

    def __init__(self, service: str, number: int, start_ns: int, rng: random.Random) -> None:
        self.service, self.number, self.start_ns, self.rng = service, number, start_ns, rng
        grpc_service, methods = SERVICES[service]
        self.keys = [(grpc_service, m, s) for m in methods for s in sorted(set(STATUSES))]
        self.buckets = {k: [0] * (len(BOUNDS) + 1) for k in self.keys}
        self.sums = dict.fromkeys(self.keys, 0.0)
        self.memory = 60_000_000 + rng.randrange(20_000_000)

    def points_per_collection(self) -> int:
        return 2 * len(self.keys) + 4

    def collect(self, now_ns: int) -> ResourceMetrics:
        """One collection of every instrument at `now_ns`, after some more requests."""
        rng = self.rng
        for _ in range(rng.randrange(20, 60)):
            key = rng.choice(self.keys)
            latency = rng.lognormvariate(3.0, 1.0)  # ms, median about 20
            self.buckets[key][sum(latency > b for b in BOUNDS)] += 1
            self.sums[key] += latency
        resource_metrics = ResourceMetrics()
        resource = resource_metrics.resource
        resource.attributes.extend(
            [
                kv("service.name", self.service),
                kv("service.instance.id", f"{self.service}-{self.number}"),
                kv("service.namespace", "boutique"),
                kv("telemetry.sdk.language", "python"),
                kv("telemetry.sdk.name", "opentelemetry"),
                kv("telemetry.sdk.version", "1.45.2"),
                kv("host.name", "shop-host"),
                kv("process.pid", 4000 + self.number),
            ]
        )
        scope = resource_metrics.scope_metrics.add()
        scope.scope.name = "boutique.mesh"
        duration = scope.metrics.add(name="rpc.server.duration", unit="ms", description="gRPC server latency")
        duration.histogram.aggregation_temporality = CUMULATIVE
        requests = scope.metrics.add(
            name="rpc.server.requests", unit="{request}", description="gRPC requests"
        )
        requests.sum.aggregation_temporality = CUMULATIVE
        requests.sum.is_monotonic = True
        for key in self.keys:
            labels = [kv("rpc.system", "grpc"), kv("rpc.service", key[0]), kv("rpc.method", key[1])]
            labels.append(kv("rpc.grpc.status_code", key[2]))
            counts = self.buckets[key]
            point = duration.histogram.data_points.add(
                start_time_unix_nano=self.start_ns,
                time_unix_nano=now_ns,
                count=sum(counts),
                sum=self.sums[key],
                explicit_bounds=BOUNDS,
                bucket_counts=counts,
            )
            point.attributes.extend(labels)
            counter = requests.sum.data_points.add(
                start_time_unix_nano=self.start_ns, time_unix_nano=now_ns, as_int=sum(counts)
            )
            counter.attributes.extend(labels)
        self.memory += rng.randrange(-500_000, 600_000)
        gauges = [
            ("process.memory.usage", "By", float(self.memory)),
            ("process.cpu.utilization", "1", rng.random() * 0.4),
            ("rpc.server.open_connections", "{connection}", float(rng.randrange(1, 30))),
        ]
        for name, unit, value in gauges:
            gauge = scope.metrics.add(name=name, unit=unit)
            gauge.gauge.data_points.add(time_unix_nano=now_ns, as_double=value)
        in_flight = scope.metrics.add(name="rpc.server.active_requests", unit="{request}")
        in_flight.sum.aggregation_temporality = CUMULATIVE
        in_flight.sum.data_points.add(
            start_time_unix_nano=self.start_ns, time_unix_nano=now_ns, as_int=rng.randrange(0, 8)
        )
        return resource_metrics


def collections(seed: int) -> Iterator[ResourceMetrics]:
    """Every instance's collections, interval after interval, ending about now."""
    rng = random.Random(seed)
    start_ns = time.time_ns() - 3600 * 1_000_000_000
    instances = [Instance(s, n, start_ns, rng) for s in SERVICES for n in range(INSTANCES)]
    now_ns = start_ns
    while True:
        now_ns += INTERVAL_NS
        for instance in instances:
            yield instance.collect(now_ns + rng.randrange(1_000_000_000))


def payloads(points: int, per_request: int = 512, seed: int = 11) -> list[bytes]:
    """Serialized requests holding at least `points` data points, about `per_request` each."""
    found: list[bytes] = []
    request, in_request, total = ExportMetricsServiceRequest(), 0, 0
    for resource_metrics in collections(seed):
        request.resource_metrics.append(resource_metrics)
        added = count_points(resource_metrics)
        in_request += added
        total += added
        if in_request >= per_request:
            found.append(request.SerializeToString())
            request, in_request = ExportMetricsServiceRequest(), 0
            if total >= points:
                break
    return found


def count_points(resource_metrics: ResourceMetrics) -> int:
    """Data points of every kind in one resource's metrics."""
    seen = 0
    for scope in resource_metrics.scope_metrics:
        for metric in scope.metrics:
            which = metric.WhichOneof("data")
            if which is not None:
                seen += len(getattr(metric, which).data_points)
    return seen


def parse_only(chunk: list[bytes]) -> int:
    """Parse each payload with the full opentelemetry.proto class; data points seen."""
    return parse_counting(
        chunk,
        ExportMetricsServiceRequest,
        lambda request: sum(count_points(r) for r in request.resource_metrics),
    )


def main() -> None:
    """Points stored per second through the pipeline against parse-only, same payloads, alternating rounds."""
    from boutique.observatory.metrics.decode import decode
    from boutique.observatory.pipeline import Pipeline, QueueFull
    from boutique.observatory.store.duckdb_store import DuckDBStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--per-request", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    data = payloads(args.points, args.per_request)
    total = sum(len(p) for p in data)
    print(f"{len(data)} requests, {total / len(data) / 1024:.0f} KiB each, {total / args.points:.0f} B/point")
    with tempfile.TemporaryDirectory() as folder:
        store = DuckDBStore(Path(folder) / "metrics.duckdb", threads=1)
        pipeline = Pipeline(store)
        pipeline.start()

        def stored(chunk: list[bytes]) -> int:
            pending: list[Future[int]] = []
            for payload in chunk:
                batch = decode(payload)
                while True:
                    try:
                        pending.append(pipeline.offer(batch))
                        break
                    except QueueFull:
                        next(f for f in pending if not f.done()).result()
            return sum(f.result() for f in pending)

        modes = {"parse": parse_only, "decode": lambda c: sum(len(decode(p)) for p in c), "stored": stored}
        seconds = dict.fromkeys(modes, 0.0)
        counted = dict.fromkeys(modes, 0)
        per_round = -(-len(data) // args.rounds)
        for number, begin in enumerate(range(0, len(data), per_round)):
            chunk = data[begin : begin + per_round]
            for name in modes if number % 2 == 0 else list(modes)[::-1]:
                gc.collect()
                took = time.perf_counter()
                counted[name] += modes[name](chunk)
                seconds[name] += time.perf_counter() - took
        pipeline.stop()
        took = time.perf_counter()
        store.checkpoint()
        seconds["stored"] += time.perf_counter() - took
        store.close()
    for name in modes:
        print(f"{name:>7}: {counted[name] / seconds[name]:>10,.0f} points/s")
    print(
        f"stored / parse-only: {counted['stored'] / seconds['stored'] / (counted['parse'] / seconds['parse']):.3f}"
    )


if __name__ == "__main__":
    main()
