"""OTLP/protobuf spans stored per second on one core, against merely parsing the same payloads.

Payloads are `ExportTraceServiceRequest`s of 512 spans each (the SDK BatchSpanProcessor's default),
every request from one service of a web shop the way each process's SDK exports its own spans:
frontend HTTP server spans with http.* attributes, gRPC client and server spans with rpc.*
attributes, message events, some errors with exception events, many distinct traces. Two modes run
on the same payloads, alternating A B, B A, … every round: (A) `ExportTraceServiceRequest().
ParseFromString(payload)` with the real opentelemetry.proto class, and (B) the ingest path:
`decode(payload)` then `Pipeline.offer` into a `DuckDBStore` (threads=1) in a temporary directory,
waiting for every batch's future, i.e. until the writer thread's group commit has returned. The
whole process (all its threads) is pinned to one CPU and its CPU time is measured too. The ratio
printed is stored/parsed spans per second (target >= 0.4). Then (C) runs a real `boutique
observatory` process (it inherits the pinning), sends it the same payloads over OTLP/HTTP and
samples its resident memory (target < 300 MiB).
Usage: python benchmarks/ingest.py [--spans 200000] [--rounds 10] [--direct] [--dir DIR] [--cpu N]
       [--no-process]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from boutique.observatory.pipeline import Pipeline, QueueFull
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.duckdb_store import DuckDBStore
from boutique.run.ports import free_port

BATCH = 512  # spans per export request: the BatchSpanProcessor's max_export_batch_size default
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT
ROUTES = [
    ("GET", "/", "frontend.home"),
    ("GET", "/product/{id}", "frontend.product"),
    ("POST", "/cart", "frontend.cart.add"),
    ("GET", "/cart", "frontend.cart"),
    ("POST", "/cart/checkout", "frontend.checkout"),
    ("POST", "/setCurrency", "frontend.currency"),
]
# The backends each route calls: (service, gRPC service, method).
CALLS = {
    "/": [
        ("currencyservice", "hipstershop.CurrencyService", "GetSupportedCurrencies"),
        ("productcatalogservice", "hipstershop.ProductCatalogService", "ListProducts"),
        ("cartservice", "hipstershop.CartService", "GetCart"),
        ("adservice", "hipstershop.AdService", "GetAds"),
    ],
    "/product/{id}": [
        ("productcatalogservice", "hipstershop.ProductCatalogService", "GetProduct"),
        ("currencyservice", "hipstershop.CurrencyService", "Convert"),
        ("recommendationservice", "hipstershop.RecommendationService", "ListRecommendations"),
        ("adservice", "hipstershop.AdService", "GetAds"),
    ],
    "/cart": [
        ("cartservice", "hipstershop.CartService", "AddItem"),
        ("productcatalogservice", "hipstershop.ProductCatalogService", "GetProduct"),
    ],
    "/cart/checkout": [
        ("checkoutservice", "hipstershop.CheckoutService", "PlaceOrder"),
        ("paymentservice", "hipstershop.PaymentService", "Charge"),
        ("shippingservice", "hipstershop.ShippingService", "ShipOrder"),
        ("emailservice", "hipstershop.EmailService", "SendOrderConfirmation"),
        ("cartservice", "hipstershop.CartService", "EmptyCart"),
    ],
    "/setCurrency": [("currencyservice", "hipstershop.CurrencyService", "GetSupportedCurrencies")],
}
PRODUCTS = ["OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0", "LS4PSXUNUM"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/124.0", "Mozilla/5.0 (Macintosh) Safari/605.1", "curl/8.5"]


def kv(key: str, value: str | int | bool) -> KeyValue:
    """One attribute."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def resource_of(service: str, instance: int) -> Resource:
    """The resource an OpenTelemetry Python SDK reports for one shop process."""
    return Resource(
        attributes=[
            kv("service.name", service),
            kv("service.instance.id", f"{service}-{instance}"),
            kv("service.version", "1.4.2"),
            kv("telemetry.sdk.language", "python"),
            kv("telemetry.sdk.name", "opentelemetry"),
            kv("telemetry.sdk.version", "1.27.0"),
            kv("host.name", f"shop-host-{instance}"),
            kv("process.pid", 4000 + instance),
        ]
    )


def span(
    trace: bytes, parent: bytes, name: str, kind: int, start_ns: int, took_ns: int, attrs: list[KeyValue]
) -> Span:
    """A span with fresh id and the given timing and attributes."""
    return Span(
        trace_id=trace,
        span_id=random.getrandbits(64).to_bytes(8, "big"),
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + took_ns,
        attributes=attrs,
    )


def message_events(target: Span, sent: int, received: int) -> None:
    """The two gRPC message events the instrumentation records."""
    for number, (kind, size) in enumerate((("SENT", sent), ("RECEIVED", received)), 1):
        target.events.add(
            time_unix_nano=target.start_time_unix_nano + number * 1000,
            name="message",
            attributes=[kv("message.type", kind), kv("message.id", 1), kv("message.uncompressed_size", size)],
        )


def fail(target: Span, message: str, exc_type: str) -> None:
    """Mark a span as an error with an exception event."""
    target.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=message))
    target.events.add(
        time_unix_nano=target.end_time_unix_nano,
        name="exception",
        attributes=[
            kv("exception.type", exc_type),
            kv("exception.message", message),
            kv("exception.escaped", False),
        ],
    )


def one_trace(now_ns: int) -> list[tuple[str, Span]]:
    """The spans of one shop request: (service, span) pairs, the frontend server span first."""
    trace = os.urandom(16)
    method, route, _ = random.choice(ROUTES)
    product = random.choice(PRODUCTS)
    target = route.replace("{id}", product)
    took = int(random.lognormvariate(16.5, 0.6))  # ~15 ms median
    failed = random.random() < 0.02
    root = span(
        trace,
        b"",
        f"{method} {route}",
        SERVER,
        now_ns,
        took,
        [
            kv("http.method", method),
            kv("http.route", route),
            kv("http.target", target),
            kv("http.scheme", "http"),
            kv("http.host", "localhost:8080"),
            kv("http.flavor", "1.1"),
            kv("http.user_agent", random.choice(AGENTS)),
            kv("net.peer.ip", f"10.0.{random.randrange(256)}.{random.randrange(256)}"),
            kv("http.status_code", 500 if failed else 200),
            kv("session.id", os.urandom(8).hex()),
        ],
    )
    spans = [("frontend", root)]
    calls = CALLS.get(route, CALLS["/cart"])
    offset = 200_000
    failing = random.randrange(len(calls)) if failed else -1
    for number, (service, rpc_service, rpc_method) in enumerate(calls):
        name = f"{rpc_service}/{rpc_method}"
        share = max(50_000, took // (len(calls) + 1))
        code = 13 if number == failing else 0
        common = [
            kv("rpc.system", "grpc"),
            kv("rpc.service", rpc_service),
            kv("rpc.method", rpc_method),
            kv("rpc.grpc.status_code", code),
        ]
        client = span(
            trace,
            root.span_id,
            name,
            CLIENT,
            now_ns + offset,
            share,
            [*common, kv("net.peer.name", service), kv("net.peer.port", 3550), kv("app.product.id", product)],
        )
        server = span(
            trace,
            client.span_id,
            name,
            SERVER,
            now_ns + offset + 30_000,
            share - 60_000,
            [*common, kv("net.peer.ip", "127.0.0.1"), kv("app.user.tier", random.choice(["free", "gold"]))],
        )
        message_events(client, random.randrange(20, 400), random.randrange(20, 4000))
        if code:
            fail(client, "upstream failed", "grpc.RpcError")
            fail(server, f"{rpc_method} failed: internal error", "RuntimeError")
        spans += [("frontend", client), (service, server)]
        offset += share
    if failed:
        fail(root, "Internal Server Error", "grpc.RpcError")
    return spans


def payloads(count: int, seed: int = 7) -> list[bytes]:
    """Serialized export requests holding about `count` spans, 512 per request, one service each."""
    random.seed(seed)
    pending: dict[str, list[Span]] = {}
    out: list[bytes] = []
    instance = {
        name: number for number, name in enumerate(["frontend", *{c[0] for v in CALLS.values() for c in v}])
    }
    resources = {name: resource_of(name, number) for name, number in instance.items()}
    scope = InstrumentationScope(name="opentelemetry.instrumentation.grpc", version="0.48b0")
    now_ns = time.time_ns() - 3_600_000_000_000
    while len(out) * BATCH < count:
        now_ns += random.randrange(100_000, 3_000_000)
        for service, item in one_trace(now_ns):
            waiting = pending.setdefault(service, [])
            waiting.append(item)
            if len(waiting) == BATCH:
                request = ExportTraceServiceRequest(
                    resource_spans=[ResourceSpans(resource=resources[service])]
                )
                request.resource_spans[0].scope_spans.add(scope=scope, spans=waiting)
                out.append(request.SerializeToString())
                pending[service] = []
    return out


def pin(cpu: int) -> int:
    """Pin every thread of this process (and so every thread it starts later) to one CPU; thread count."""
    tasks = os.listdir("/proc/self/task")
    for tid in tasks:
        os.sched_setaffinity(int(tid), {cpu})
    return len(tasks)


def pinned_threads(cpu: int) -> tuple[int, int]:
    """(threads pinned to `cpu` alone, all threads) of this process, read back from the kernel."""
    tasks = os.listdir("/proc/self/task")
    return sum(os.sched_getaffinity(int(t)) == {cpu} for t in tasks), len(tasks)


@dataclass
class Mode:
    """Spans and times (wall and process CPU, ns) accumulated by one mode, and its per-round rates."""

    spans: int = 0
    wall_ns: int = 0
    cpu_ns: int = 0
    rates: list[float] = field(default_factory=list)  # spans per wall second, each round

    def add(self, spans: int, wall_ns: int, cpu_ns: int) -> None:
        """Account one round."""
        self.spans += spans
        self.wall_ns += wall_ns
        self.cpu_ns += cpu_ns
        self.rates.append(spans / wall_ns * 1e9)

    def rate(self) -> float:
        """Spans per wall second overall."""
        return self.spans / self.wall_ns * 1e9

    def cpu_rate(self) -> float:
        """Spans per second of process CPU time (all threads)."""
        return self.spans / self.cpu_ns * 1e9


def parse_only(chunk: list[bytes]) -> int:
    """Parse each payload with the full opentelemetry.proto class; spans seen."""
    spans = 0
    for payload in chunk:
        request = ExportTraceServiceRequest()
        request.ParseFromString(payload)
        spans += len(request.resource_spans[0].scope_spans[0].spans)
    return spans


def through_pipeline(pipeline: Pipeline) -> Callable[[list[bytes]], int]:
    """Decode each payload and offer it to the pipeline, as a receiver does; wait for every future."""

    def run(chunk: list[bytes]) -> int:
        pending: list[Future[int]] = []
        for payload in chunk:
            batch = decode(payload)
            while True:
                try:
                    pending.append(pipeline.offer(batch))
                    break
                except QueueFull:
                    next(f for f in pending if not f.done()).result()  # wait for the writer to drain
        return sum(f.result() for f in pending)

    return run


def direct(store: DuckDBStore) -> Callable[[list[bytes]], int]:
    """Decode each payload and append it to the store at once (one commit per request)."""

    def run(chunk: list[bytes]) -> int:
        spans = 0
        for payload in chunk:
            batch = decode(payload)
            store.append(batch)
            spans += len(batch)
        return spans

    return run


def timed(run: Callable[[list[bytes]], int], chunk: list[bytes], into: Mode) -> None:
    """Run one mode on one chunk, accounting wall and CPU time."""
    gc.collect()
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    spans = run(chunk)
    into.add(spans, time.perf_counter_ns() - wall, time.process_time_ns() - cpu)


def measure(args: argparse.Namespace, folder: Path) -> None:
    """Build payloads, warm both modes, run the interleaved rounds, print the table and the ratio."""
    began = time.perf_counter()
    data = payloads(args.spans + args.warmup_spans)
    warm, data = data[: max(1, args.warmup_spans // BATCH)], data[max(1, args.warmup_spans // BATCH) :]
    total_bytes = sum(map(len, data))
    spans_total = len(data) * BATCH
    print(
        f"{spans_total:,} spans in {len(data)} requests of {BATCH} ({total_bytes / len(data) / 1024:.0f} KiB each,"
        f" {total_bytes / spans_total:.0f} B/span), {args.warmup_spans:,} more to warm up;"
        f" built in {time.perf_counter() - began:.1f}s"
    )
    store = DuckDBStore(folder / "ingest.duckdb", threads=1)
    pipeline = Pipeline(store)
    pipeline.start()
    try:
        modes: dict[str, Callable[[list[bytes]], int]] = {
            "parse": parse_only,
            "store": direct(store) if args.direct else through_pipeline(pipeline),
        }
        for run in modes.values():
            run(warm)
        results = {name: Mode() for name in modes}
        per_round = -(-len(data) // args.rounds)
        chunks = [data[i : i + per_round] for i in range(0, len(data), per_round)]
        order = list(modes)
        for number, chunk in enumerate(chunks):
            for name in order if number % 2 == 0 else order[::-1]:
                timed(modes[name], chunk, results[name])
    finally:
        pipeline.stop()
    report(args, results, store, folder, len(chunks))
    store.close()
    if args.process:
        real_process(data, folder)


def report(
    args: argparse.Namespace, results: dict[str, Mode], store: DuckDBStore, folder: Path, rounds: int
) -> None:
    """Print the table, the ratios, what is stored and the memory."""
    path = "decode + store.append per request" if args.direct else "decode + Pipeline.offer (group commit)"
    held, threads = pinned_threads(args.cpu)
    print(
        f"one core: CPU {args.cpu}, {held}/{threads} threads pinned, DuckDB threads=1"
        f" (Python {sys.version.split()[0]}, duckdb {duckdb.__version__}); {rounds} interleaved rounds"
    )
    labels = {"parse": "(A) ExportTraceServiceRequest.ParseFromString", "store": f"(B) {path}"}
    for name, mode in results.items():
        low, high = min(mode.rates), max(mode.rates)
        print(
            f"  {labels[name]:<48} {mode.rate():>11,.0f} spans/s wall  {mode.cpu_rate():>11,.0f} spans/CPU-s"
            f"  (rounds {low:,.0f}-{high:,.0f})"
        )
    parse, stored = results["parse"], results["store"]
    paired = sorted(s / p for s, p in zip(stored.rates, parse.rates, strict=True))
    stats = store.stats()
    wal = folder / "ingest.duckdb.wal"
    on_disk = sum(p.stat().st_size for p in (folder / "ingest.duckdb", wal) if p.exists())
    print(
        f"spans stored: {stats['spans']:,} (incl. warm-up); file + WAL {on_disk / 2**20:.0f} MiB;"
        f" RSS {psutil.Process().memory_info().rss / 2**20:.0f} MiB"
    )
    print(
        f"ratio stored/parsed: {stored.rate() / parse.rate():.3f} (wall), {stored.cpu_rate() / parse.cpu_rate():.3f}"
        f" (CPU), median of paired rounds {statistics.median(paired):.3f}"
        f" (range {paired[0]:.3f}-{paired[-1]:.3f}) (target >= 0.4)"
    )


def real_process(data: list[bytes], folder: Path, senders: int = 4) -> None:
    """(C) A `boutique observatory` process fed the payloads over OTLP/HTTP: its rate and its RSS."""
    ports = [free_port() for _ in range(4)]
    command = [
        sys.executable, "-m", "boutique.cli", "observatory", "--data-dir", str(folder / "process"),
        "--otlp-grpc-port", str(ports[0]), "--otlp-http-port", str(ports[1]), "--zipkin-port", str(ports[2]),
        "--port", str(ports[3]), "--log-level", "WARNING",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss: list[int] = []
    done = threading.Event()
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"http://127.0.0.1:{ports[3]}/_healthz").status_code == 200:
                        break
                time.sleep(0.05)
            watched = psutil.Process(proc.pid)

            def sample() -> None:
                while not done.wait(0.2):
                    with contextlib.suppress(psutil.Error):
                        rss.append(watched.memory_info().rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            url = f"http://127.0.0.1:{ports[1]}/v1/traces"
            headers = {"Content-Type": "application/x-protobuf"}

            def send(payload: bytes) -> None:
                while True:
                    answer = client.post(url, content=payload, headers=headers)
                    if answer.status_code == 200:
                        return
                    if answer.status_code not in (429, 503):
                        raise SystemExit(
                            f"the observatory answered {answer.status_code}: {answer.text[:200]}"
                        )
                    time.sleep(float(answer.headers.get("retry-after", "1")))

            began = time.perf_counter()
            with ThreadPoolExecutor(senders) as pool:
                list(pool.map(send, data))
            took = time.perf_counter() - began
            done.set()
            sampler.join()
            stored = client.get(f"http://127.0.0.1:{ports[3]}/api/status").json()["stored_spans"]
    finally:
        done.set()
        proc.terminate()
        proc.wait(30)
    steady = sorted(rss[len(rss) // 2 :]) or [0]
    print(
        f"  (C) a `boutique observatory` process, the same payloads over OTLP/HTTP from {senders} senders:"
        f" {stored / took:,.0f} spans/s stored; its RSS {steady[len(steady) // 2] / 2**20:,.0f} MiB steady"
        f" (median of the second half), {max(rss or [0]) / 2**20:,.0f} MiB peak (target < 300 MiB)"
    )


def main() -> None:
    """Parse the options, pin to one core and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spans", type=int, default=200_000, help="spans stored (and parsed) in the measurement"
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the spans are split into")
    parser.add_argument("--warmup-spans", type=int, default=10_240, help="spans run through both modes first")
    parser.add_argument("--direct", action="store_true", help="store.append per request, no pipeline")
    parser.add_argument("--dir", help="directory for the store (default: a temporary one)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed)")
    parser.add_argument(
        "--no-process", dest="process", action="store_false", help="skip (C), the real process"
    )
    args = parser.parse_args()
    if args.cpu is None:
        args.cpu = max(os.sched_getaffinity(0))
    pin(args.cpu)
    if args.dir:
        folder = Path(args.dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ingest.duckdb").unlink(missing_ok=True)
        (folder / "ingest.duckdb.wal").unlink(missing_ok=True)
        measure(args, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
            measure(args, Path(tmp))


if __name__ == "__main__":
    main()
