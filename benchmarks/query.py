"""Trace-by-id and search latency of the DuckDB span store holding millions of synthetic spans.

Loads `--spans` spans (10 million by default) into a `DuckDBStore` with its default settings, in a
temporary directory or in `--keep DIR` (reused on the next run when it already holds the spans).
Spans are generated fast, as `SpanBatch` columns of 100k spans built directly: about 10 spans per
trace across 10 services and ~50 operations, start times in order over the last 24 hours, log-normal
durations, ~2% errors, and OTLP `Span` bodies drawn from a pool of a few thousand distinct serialized
bodies (http.*, rpc.*, app.user.tier, cloud.region, ...). Then, after a warm-up, measures (a)
`store.traces([id])` for random stored traces (target p95 < 10 ms) and (b) a search over the whole
window, service + operation + min duration + one tag with limit 20, as `find_traces` alone and
followed by `traces(ids)` as the query API does (target p95 < 200 ms). Also prints the load rate,
the RSS and the size on disk.
Usage: python benchmarks/query.py [--spans 10000000] [--keep DIR] [--lookups 200] [--searches 50]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import psutil
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from boutique.observatory import tagsig
from boutique.observatory.model import STATUS_ERROR, STATUS_OK, STATUS_UNSET, SpanBatch
from boutique.observatory.store.base import TagCondition, TraceQuery
from boutique.observatory.store.duckdb_store import DuckDBStore

CHUNK = 100_000  # spans per append while loading
DAY_US = 24 * 3600 * 1_000_000
SERVER, CLIENT, INTERNAL = 2, 3, 1
BACKENDS = [
    "cartservice",
    "productcatalogservice",
    "currencyservice",
    "checkoutservice",
    "paymentservice",
    "shippingservice",
    "emailservice",
    "recommendationservice",
    "adservice",
]
ROUTES = ["GET /", "GET /product/{id}", "POST /cart", "GET /cart", "POST /cart/checkout"]
METHODS = ["Get", "List", "Add", "Update", "Check"]  # five gRPC methods per backend → ~50 operations in all
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1"]
TIERS = ["free", "silver", "gold"]
VARIANTS = 60  # distinct bodies per (service, operation, kind)
TEMPLATES = 400  # distinct trace shapes


@dataclass(frozen=True)
class Slot:
    """One span of a trace shape: where it runs, its parent (index in the trace) and its share of time."""

    service: str
    operation: str
    kind: int
    parent: int  # -1 for the root
    offset: float  # start, as a share of the root's duration
    share: float  # duration, as a share of the root's duration


def kv(key: str, value: str | int) -> KeyValue:
    """One attribute."""
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def rpc_name(service: str, method: str) -> str:
    """The gRPC full method name used as the span name."""
    return f"hipstershop.{service}/{method}{service.removesuffix('service').capitalize()}"


def body_pool(rng: random.Random) -> dict[tuple[str, str, int], list[bytes]]:
    """Distinct serialized OTLP Span bodies for every (service, operation, kind) the traces use."""
    pool: dict[tuple[str, str, int], list[bytes]] = {}

    def variants(service: str, operation: str, kind: int, extra: Callable[[], list[KeyValue]]) -> None:
        bodies = []
        for _ in range(VARIANTS):
            span = OtlpSpan(
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                name=operation,
                kind=kind,  # type: ignore[arg-type]
                start_time_unix_nano=1,
                end_time_unix_nano=2,
                attributes=[
                    *extra(),
                    kv("app.user.tier", rng.choice(TIERS)),
                    kv("cloud.region", rng.choice(REGIONS)),
                    kv("app.session.id", rng.randbytes(6).hex()),
                ],
            )
            if rng.random() < 0.2:
                span.events.add(name="cache.miss", attributes=[kv("cache.key", rng.randbytes(4).hex())])
            bodies.append(span.SerializeToString())
        pool[(service, operation, kind)] = bodies

    for route in ROUTES:
        method, path = route.split(" ")
        variants(
            "frontend",
            route,
            SERVER,
            lambda method=method, path=path: [  # type: ignore[misc]
                kv("http.method", method),
                kv("http.route", path),
                kv("http.status_code", rng.choice([200, 200, 200, 200, 302, 404, 500])),
                kv("http.user_agent", rng.choice(["Mozilla/5.0 Firefox/124.0", "curl/8.5", "Safari/605.1"])),
                kv("net.peer.ip", f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"),
            ],
        )
    callers = ["frontend", "checkoutservice", "recommendationservice"]
    for backend in BACKENDS:
        for method in METHODS:
            name = rpc_name(backend, method)

            def rpc(backend: str = backend, method: str = method) -> list[KeyValue]:
                return [
                    kv("rpc.system", "grpc"),
                    kv("rpc.service", f"hipstershop.{backend}"),
                    kv("rpc.method", method),
                    kv("rpc.grpc.status_code", rng.choice([0, 0, 0, 0, 0, 0, 0, 0, 2, 14])),
                ]

            variants(backend, name, SERVER, rpc)
            for caller in callers:
                variants(caller, name, CLIENT, rpc)
        variants(backend, f"{backend}.db.query", INTERNAL, lambda: [kv("db.system", "postgresql")])
    return pool


def shapes(rng: random.Random) -> list[list[Slot]]:
    """Trace shapes of 10 spans: a frontend root, four client/server pairs (two nested), one DB span."""
    out = []
    for _ in range(TEMPLATES):
        slots = [Slot("frontend", rng.choice(ROUTES), SERVER, -1, 0.0, 1.0)]
        parent, caller = 0, "frontend"
        cursor = 0.05
        for pair in range(4):
            backend = rng.choice(BACKENDS)
            if pair == 2:  # the third call is made by the second callee (a nested call)
                parent, caller = len(slots) - 1, slots[-1].service
                caller = caller if caller in ("checkoutservice", "recommendationservice") else "frontend"
            name = rpc_name(backend, rng.choice(METHODS))
            share = rng.uniform(0.1, 0.2)
            slots.append(Slot(caller, name, CLIENT, parent, cursor, share))
            slots.append(Slot(backend, name, SERVER, len(slots) - 1, cursor + 0.01, share - 0.02))
            cursor += share + 0.02
        last = slots[-1]
        slots.append(
            Slot(last.service, f"{last.service}.db.query", INTERNAL, len(slots) - 1, cursor - 0.1, 0.05)
        )
        out.append(slots)
    return out


@dataclass
class Rows:
    """One generated chunk a value per span and column, turned into a columnar `SpanBatch` at the end."""

    trace_id: list[bytes] = field(default_factory=list)
    span_id: list[bytes] = field(default_factory=list)
    parent_id: list[bytes] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    operation: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    start_us: list[int] = field(default_factory=list)
    duration_us: list[int] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    instance: list[str] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    resource: list[bytes] = field(default_factory=list)
    scope: list[bytes] = field(default_factory=list)

    def columnar(self, signature: np.ndarray) -> SpanBatch:
        """The chunk as a `SpanBatch` (roots' parent ids as eight zero bytes, resources and scopes once each)."""
        resources = list(dict.fromkeys(self.resource))
        scopes = list(dict.fromkeys(self.scope))
        where = {r: i for i, r in enumerate(resources)}
        names = [o.encode() for o in self.operation]
        resource_index = np.array([where[r] for r in self.resource], dtype=np.int32)
        first = {r: self.resource.index(r) for r in resources}

        def offsets(parts: list[bytes]) -> np.ndarray:
            return np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)

        return SpanBatch(
            size=len(self.span_id),
            trace_id=b"".join(self.trace_id),
            span_id=b"".join(self.span_id),
            parent_id=b"".join(p or bytes(8) for p in self.parent_id),
            kind=np.array(self.kind, dtype=np.uint8),
            status=np.array(self.status, dtype=np.uint8),
            start_us=np.array(self.start_us, dtype=np.int64),
            duration_us=np.array(self.duration_us, dtype=np.int64),
            operation=b"".join(names),
            operation_offsets=offsets(names),
            body=b"".join(self.body),
            body_offsets=offsets(self.body),
            resource_index=resource_index,
            scope_index=np.array([scopes.index(s) for s in self.scope], dtype=np.int32),
            resources=resources,
            services=[self.service[first[r]] for r in resources],
            instances=[self.instance[first[r]] for r in resources],
            scopes=scopes,
            signature=signature,
        )


class Generator:
    """`SpanBatch` chunks of synthetic shop traces, start times in order over a window ending now."""

    def __init__(self, total: int, now_us: int, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.pool = body_pool(self.rng)
        self.shapes = shapes(self.rng)
        self.total = total
        self.now_us = now_us
        self.resources = {
            s: Resource(attributes=[kv("service.name", s), kv("telemetry.sdk.name", "opentelemetry")])
            for s in ["frontend", *BACKENDS]
        }
        self.scope = InstrumentationScope(name="opentelemetry.instrumentation.grpc", version="0.48b0")
        # Each pooled body belongs to one service, so its tag signature (with the resource's) is fixed.
        self.signature_index: dict[bytes, int] = {}
        rows: list[np.ndarray] = []
        for (service, _, _), bodies in self.pool.items():
            resource = tagsig.of([a.SerializeToString() for a in self.resources[service].attributes])
            for body in bodies:
                span = OtlpSpan.FromString(body)
                pairs = [a.SerializeToString() for a in span.attributes]
                pairs += [a.SerializeToString() for e in span.events for a in e.attributes]
                self.signature_index[body] = len(rows)
                rows.append(tagsig.of(pairs) | resource)
        self.signatures = np.array(rows, dtype=np.uint64)

    def chunks(self, chunk: int = CHUNK) -> Iterator[SpanBatch]:
        """Batches of about `chunk` spans until `total` spans are made."""
        traces = max(1, self.total // 10)
        step = DAY_US / traces
        start0 = self.now_us - DAY_US
        scope = self.scope.SerializeToString()
        resources = {s: r.SerializeToString() for s, r in self.resources.items()}
        instances = {s: f"{s}-1" for s in resources}
        rng = self.rng
        made = 0
        number = 0
        while made < self.total:
            batch = Rows()
            self._rows: list[int] = []
            while len(batch.span_id) < chunk and made < self.total:
                slots = rng.choice(self.shapes)
                if made + len(slots) > self.total:
                    slots = slots[: self.total - made]
                self._trace(batch, slots, int(start0 + number * step), resources, instances, scope)
                made += len(slots)
                number += 1
            yield batch.columnar(self.signatures[np.array(self._rows, dtype=np.intp)])

    def _trace(
        self,
        batch: Rows,
        slots: list[Slot],
        start: int,
        resources: dict[str, bytes],
        instances: dict[str, str],
        scope: bytes,
    ) -> None:
        """Append one trace's spans to the batch."""
        rng = self.rng
        took = max(100, int(rng.lognormvariate(9.9, 0.9)))  # median ~20 ms, long tail
        trace_id = os.urandom(16)
        ids = os.urandom(8 * len(slots))
        span_ids = [ids[i * 8 : i * 8 + 8] for i in range(len(slots))]
        failing = rng.randrange(1, len(slots)) if rng.random() < 0.15 and len(slots) > 1 else -1
        for index, slot in enumerate(slots):
            batch.trace_id.append(trace_id)
            batch.span_id.append(span_ids[index])
            batch.parent_id.append(span_ids[slot.parent] if slot.parent >= 0 else b"")
            batch.service.append(slot.service)
            batch.operation.append(slot.operation)
            batch.kind.append(slot.kind)
            batch.start_us.append(start + int(took * slot.offset))
            batch.duration_us.append(max(1, int(took * slot.share)))
            # ~15% of traces carry one failing span: about 1.5% of spans, plus the odd OK status.
            batch.status.append(
                STATUS_ERROR if index == failing else STATUS_OK if index == 0 else STATUS_UNSET
            )
            batch.instance.append(instances[slot.service])
            choices = self.pool[(slot.service, slot.operation, slot.kind)]
            body = choices[rng.randrange(VARIANTS)]
            batch.body.append(body)
            self._rows.append(self.signature_index[body])
            batch.resource.append(resources[slot.service])
            batch.scope.append(scope)


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def disk_mib(path: Path) -> float:
    """Size of the database file plus its write-ahead log, MiB."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".wal")) if p.exists()) / 2**20


def load(store: DuckDBStore, total: int, now_us: int) -> None:
    """Generate and append `total` spans, with a progress line; print the load rate."""
    began = time.perf_counter()
    generated = 0.0
    loaded = 0
    peak = 0.0
    chunks = Generator(total, now_us).chunks()
    while True:
        t0 = time.perf_counter()
        batch = next(chunks, None)
        if batch is None:
            break
        generated += time.perf_counter() - t0
        store.append(batch)
        loaded += len(batch)
        peak = max(peak, rss_mib())
        took = time.perf_counter() - began
        sys.stdout.write(
            f"\r  loaded {loaded:>12,} spans  {loaded / took:>9,.0f} spans/s  RSS {rss_mib():5.0f} MiB  {took:6.0f}s"
        )
        sys.stdout.flush()
    took = time.perf_counter() - began
    print(
        f"\rloaded {loaded:,} spans in {took:.0f}s: {loaded / took:,.0f} spans/s"
        f" ({generated:.0f}s of it generating, {loaded / (took - generated):,.0f} spans/s appending);"
        f" peak RSS while loading {peak:.0f} MiB"
    )


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def timed(calls: list[Callable[[], object]]) -> tuple[list[float], list[object]]:
    """Run each call once; latencies in ms and results."""
    latencies, results = [], []
    for call in calls:
        began = time.perf_counter()
        results.append(call())
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies, results


def line(label: str, latencies: list[float], target: float | None = None) -> None:
    """One table row: p50, p95, max in ms, and the ratio of p95 to the target."""
    p95 = percentile(latencies, 95)
    tail = f"  p95/target {p95 / target:.2f} (target p95 < {target:g} ms)" if target else ""
    print(
        f"  {label:<42} p50 {percentile(latencies, 50):8.1f} ms  p95 {p95:8.1f} ms"
        f"  max {max(latencies):8.1f} ms  (n={len(latencies)}){tail}"
    )


def searches(store: DuckDBStore, count: int, rng: random.Random) -> list[TraceQuery]:
    """Search queries with varying service, operation, min duration and tag, over the whole window."""
    pairs = [
        (service, name)
        for service in store.services()
        for name, kind in store.operations(service)
        if kind in (SERVER, CLIENT)
    ]
    tags = [("cloud.region", r) for r in REGIONS] + [("app.user.tier", t) for t in TIERS]
    tags += [("http.status_code", "500"), ("rpc.grpc.status_code", "14"), ("rpc.system", "grpc")]
    out = []
    for _ in range(count):
        service, operation = rng.choice(pairs)
        key, value = rng.choice(tags)
        if operation.startswith(("GET", "POST")) and key.startswith("rpc."):
            key, value = "http.status_code", rng.choice(["200", "404", "500"])
        out.append(
            TraceQuery(
                service=service,
                operation=operation,
                min_duration_us=rng.choice([1000, 5000, 20_000, 50_000]),
                tags=(TagCondition(key, "=", value),),
                limit=20,
            )
        )
    return out


def measure(store: DuckDBStore, args: argparse.Namespace) -> None:
    """Warm up, then time trace lookups and searches; print the table."""
    rng = random.Random(args.seed)
    ids = store.sample_trace_ids(args.lookups + args.warmup)
    rng.shuffle(ids)
    warm, ids = ids[: args.warmup], ids[args.warmup :]
    queries = searches(store, args.searches + args.warmup // 4, rng)
    warm_queries, queries = queries[: args.warmup // 4], queries[args.warmup // 4 :]
    timed([lambda i=i: store.traces([i]) for i in warm])  # type: ignore[misc]
    timed([lambda q=q: store.search(q) for q in warm_queries])  # type: ignore[misc]
    gc.collect()
    by_id, found = timed([lambda i=i: store.traces([i]) for i in ids])  # type: ignore[misc]
    sizes = [len(t[0]) for t in found if t]  # type: ignore[index, arg-type]
    search_ms, results = timed([lambda q=q: store.search(q) for q in queries])  # type: ignore[misc]
    hits = [len(r) for r in results]  # type: ignore[arg-type]
    print(
        f"queries (after {len(warm)} warm-up lookups and {len(warm_queries)} warm-up searches;"
        f" {len(sizes)}/{len(ids)} traces found, {statistics.fmean(sizes):.1f} spans each;"
        f" searches found {statistics.fmean(hits):.1f} traces on average, {hits.count(0)} found none):"
    )
    line("(a) trace by id: traces([id])", by_id, 10)
    line("(b) search, whole traces returned: search(q)", search_ms, 200)


def main() -> None:
    """Parse the options, load (or reuse) the store, measure, print memory and disk."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=10_000_000, help="spans in the store")
    parser.add_argument(
        "--keep", help="directory whose store is reused (loaded first when it lacks the spans)"
    )
    parser.add_argument("--lookups", type=int, default=200, help="timed trace-by-id lookups")
    parser.add_argument("--searches", type=int, default=50, help="timed searches")
    parser.add_argument(
        "--warmup", type=int, default=20, help="warm-up lookups (and a quarter as many searches)"
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--memory-limit",
        default="256MB",
        help="DuckDB memory limit (default 256MB: a million traces' index needs about 50 MB of it)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="query-bench-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        path = folder / "query.duckdb"
        store = DuckDBStore(path, memory_limit=args.memory_limit)
        try:
            held = store.stats()["spans"]
            print(
                f"DuckDBStore, memory limit {args.memory_limit} (Python {sys.version.split()[0]},"
                f" duckdb {duckdb.__version__});"
                f" {path} holds {held:,} spans"
            )
            if held < args.spans:
                if held:
                    raise SystemExit(f"{path} holds {held:,} spans, fewer than --spans; remove it first")
                load(store, args.spans, int(time.time() * 1_000_000))
            measure(store, args)
            print(f"RSS {rss_mib():.0f} MiB; on disk {disk_mib(path):,.0f} MiB (file + WAL)")
        finally:
            store.close()
        print(f"after close: on disk {disk_mib(path):,.0f} MiB")


if __name__ == "__main__":
    main()
