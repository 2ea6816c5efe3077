"""OTLP/protobuf spans stored per second, sustained, against merely parsing the same payloads.

Payloads are `ExportTraceServiceRequest`s of 512 spans each (the SDK BatchSpanProcessor's default),
every request from one service of a web shop the way each process's SDK exports its own spans:
frontend HTTP server spans with http.* attributes, gRPC client and server spans with rpc.*
attributes, message events, some errors with exception events, many distinct traces. The modes run
on the same payloads, alternating their order every round: (A) `ExportTraceServiceRequest().
ParseFromString(payload)` with the real opentelemetry.proto class; (B) the ingest path with the
compiled span walker (when it is built) and (B') with the pure-Python one: walk the payload, then
`Pipeline.offer` into a `DuckDBStore` (threads=1) of its own behind the card redactor, waiting for
every batch's future, i.e. until the writer thread's group commit has returned. After the rounds each
store checkpoints, and that time counts: the sustained rate is spans over rounds plus checkpoint. The
whole process (all its threads) is pinned to `--cores` CPUs (default 2) and its CPU time is measured
too. The ratios printed are sustained stored/parsed spans per second (targets: 0.35 compiled, 0.15
pure-Python). Then (C) runs a real `boutique observatory` process (it inherits the pinning), sends it
the same payloads over OTLP/HTTP and samples its resident memory (target < 300 MiB). (E) and (F)
do for log records and metric points what (A)/(B) do for spans: OTLP requests of 512 records or points
(`payloads_logs.py`, `payloads_metrics.py`), parsed by the opentelemetry.proto class against decoded,
redacted and committed through a `Pipeline` into a store of their own, rounds alternating, the closing
checkpoint counted. (G) runs `benchmarks/sampling.py`: the same span path with and without the
tail-sampling stage (journal, hold, policies), on half as many spans.
Usage: python benchmarks/ingest.py [--spans 200000] [--rounds 10] [--direct] [--dir DIR] [--cores N]
       [--no-process] [--records 100000] [--no-signals] [--no-sampling]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import shutil
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
import payloads_logs
import payloads_metrics
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from boutique.observatory.logs import decode as logs_decode
from boutique.observatory.metrics import decode as metrics_decode
from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp import walk
from boutique.observatory.pipeline import Pipeline, QueueFull
from boutique.observatory.processors.redact import CardRedactor
from boutique.observatory.store.duckdb_store import SCHEMA, DuckDBStore
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


def pin(cpus: set[int]) -> int:
    """Pin every thread of this process (and so every thread it starts later) to `cpus`; thread count."""
    tasks = os.listdir("/proc/self/task")
    for tid in tasks:
        os.sched_setaffinity(int(tid), cpus)
    return len(tasks)


def pinned_threads(cpus: set[int]) -> tuple[int, int]:
    """(threads pinned to `cpus` alone, all threads) of this process, read back from the kernel."""
    tasks = os.listdir("/proc/self/task")
    return sum(os.sched_getaffinity(int(t)) == cpus for t in tasks), len(tasks)


@dataclass
class Mode:
    """Spans and times (wall and process CPU, ns) accumulated by one mode, and its per-round rates."""

    spans: int = 0
    wall_ns: int = 0
    cpu_ns: int = 0
    rates: list[float] = field(default_factory=list)  # spans per wall second, each round
    checkpoint_ns: int = 0  # the closing checkpoint: what the rounds left for later

    def add(self, spans: int, wall_ns: int, cpu_ns: int) -> None:
        """Account one round."""
        self.spans += spans
        self.wall_ns += wall_ns
        self.cpu_ns += cpu_ns
        self.rates.append(spans / wall_ns * 1e9)

    def rate(self) -> float:
        """Spans per wall second over the rounds."""
        return self.spans / self.wall_ns * 1e9

    def sustained(self) -> float:
        """Spans per wall second including the checkpoint that folds what they wrote into the file."""
        return self.spans / (self.wall_ns + self.checkpoint_ns) * 1e9

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


def through_pipeline(
    pipeline: Pipeline, decoder: Callable[[bytes], SpanBatch]
) -> Callable[[list[bytes]], int]:
    """Decode each payload and offer it to the pipeline, as a receiver does; wait for every future."""

    def run(chunk: list[bytes]) -> int:
        pending: list[Future[int]] = []
        for payload in chunk:
            batch = decoder(payload)
            while True:
                try:
                    pending.append(pipeline.offer(batch))
                    break
                except QueueFull:
                    next(f for f in pending if not f.done()).result()  # wait for the writer to drain
        return sum(f.result() for f in pending)

    return run


def direct(store: DuckDBStore, decoder: Callable[[bytes], SpanBatch]) -> Callable[[list[bytes]], int]:
    """Decode each payload, redact and append it to the store at once (one commit per request)."""
    redactor = CardRedactor()

    def run(chunk: list[bytes]) -> int:
        spans = 0
        for payload in chunk:
            batch = redactor.process(decoder(payload))
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


def decoders() -> dict[str, Callable[[bytes], SpanBatch]]:
    """The span walkers to measure: the compiled one when it is built, and the pure-Python one."""
    found: dict[str, Callable[[bytes], SpanBatch]] = {}
    if walk.walk_compiled is not None:
        found["compiled"] = walk.walk_compiled
    else:
        print("the compiled span walker is not built (a C compiler and Python headers, then `make`)")
    found["python"] = walk.walk_python
    return found


def measure(args: argparse.Namespace, folder: Path) -> None:
    """Build payloads, warm every mode, run the interleaved rounds, checkpoint, print the table and ratios."""
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
    stores: dict[str, DuckDBStore] = {}
    pipelines: list[Pipeline] = []
    modes: dict[str, Callable[[list[bytes]], int]] = {"parse": parse_only}
    for name, decoder in decoders().items():
        store = stores[name] = DuckDBStore(folder / f"{name}.duckdb", threads=1)
        if args.direct:
            modes[name] = direct(store, decoder)
        else:
            pipeline = Pipeline(store, processors=[CardRedactor()])
            pipeline.start()
            pipelines.append(pipeline)
            modes[name] = through_pipeline(pipeline, decoder)
    try:
        for run in modes.values():
            run(warm)
        for store in stores.values():
            store.checkpoint()
        results = {name: Mode() for name in modes}
        per_round = -(-len(data) // args.rounds)
        chunks = [data[i : i + per_round] for i in range(0, len(data), per_round)]
        order = list(modes)
        for number, chunk in enumerate(chunks):
            for name in order if number % 2 == 0 else order[::-1]:
                timed(modes[name], chunk, results[name])
    finally:
        for pipeline in pipelines:
            pipeline.stop()
    for name, store in stores.items():
        took = time.perf_counter_ns()
        store.checkpoint()
        results[name].checkpoint_ns = time.perf_counter_ns() - took
    report(args, results, stores, folder, len(chunks))
    for store in stores.values():
        store.close()
    ceiling(folder / "ceiling.duckdb", next(iter(stores.values())).path, results["parse"])
    if args.process:
        real_process(data, folder)
    if args.signals:
        other_signals(args, folder)
    if args.sampling:
        tail_sampling(args)


def tail_sampling(args: argparse.Namespace) -> None:
    """(G) the tail-sampling stage's cost: `benchmarks/sampling.py` on the same cores, its lines indented."""
    print("  (G) tail sampling, ingest with and without the sampler (benchmarks/sampling.py):", flush=True)
    script = Path(__file__).with_name("sampling.py")
    done = subprocess.run(
        [sys.executable, str(script), "--spans", str(max(20_000, args.spans // 2))],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (done.stdout + done.stderr).splitlines():
        print(f"    {line}")


def other_signals(args: argparse.Namespace, folder: Path) -> None:
    """(E) log records and (F) metric points: stored through the pipeline vs parse-only, rounds alternating."""
    signals = {
        "logs": ("(E) log records", payloads_logs, logs_decode.decode),
        "metrics": ("(F) metric points", payloads_metrics, metrics_decode.decode),
    }
    for name, (label, module, decoder) in signals.items():
        data = module.payloads(args.records + 4 * BATCH)
        warm, data = data[:4], data[4:]
        store = DuckDBStore(folder / f"{name}.duckdb", threads=1)
        pipeline = Pipeline(store, processors=[CardRedactor()])
        pipeline.start()
        stored_mode, parse_mode = Mode(), Mode()
        try:
            through = through_pipeline(pipeline, decoder)
            through(warm)
            module.parse_only(warm)
            store.checkpoint()
            per_round = -(-len(data) // args.rounds)
            for number, start in enumerate(range(0, len(data), per_round)):
                chunk = data[start : start + per_round]
                runs = [(module.parse_only, parse_mode), (through, stored_mode)]
                for run, into in runs if number % 2 == 0 else runs[::-1]:
                    timed(run, chunk, into)
        finally:
            pipeline.stop()
        took = time.perf_counter_ns()
        store.checkpoint()
        stored_mode.checkpoint_ns = time.perf_counter_ns() - took
        store.close()
        print(
            f"  {label}: parse-only {parse_mode.rate():,.0f}/s; stored {stored_mode.rate():,.0f}/s over the rounds,"
            f" {stored_mode.sustained():,.0f}/s sustained: ratio {stored_mode.sustained() / parse_mode.rate():.3f}"
            f" sustained, {stored_mode.rate() / parse_mode.rate():.3f} over the rounds"
        )


def report(
    args: argparse.Namespace,
    results: dict[str, Mode],
    stores: dict[str, DuckDBStore],
    folder: Path,
    rounds: int,
) -> None:
    """Print the table, the ratios, what is stored and the memory."""
    path = (
        "decode, redact, store.append per request"
        if args.direct
        else "decode, Pipeline.offer: redact, group commit"
    )
    held, threads = pinned_threads(args.cpus)
    print(
        f"{len(args.cpus)} core(s): CPUs {sorted(args.cpus)}, {held}/{threads} threads pinned, DuckDB threads=1"
        f" (Python {sys.version.split()[0]}, duckdb {duckdb.__version__}); {rounds} interleaved rounds;"
        f" store modes: {path}"
    )
    labels = {
        "parse": "(A) ExportTraceServiceRequest.ParseFromString",
        "compiled": "(B) ingest, compiled span walker",
        "python": "(B') ingest, pure-Python span walker",
    }
    for name, mode in results.items():
        low, high = min(mode.rates), max(mode.rates)
        sustained = f"  sustained {mode.sustained():>9,.0f}" if name in stores else " " * 20
        print(
            f"  {labels[name]:<46} {mode.rate():>9,.0f} spans/s{sustained}  {mode.cpu_rate():>9,.0f} spans/CPU-s"
            f"  (rounds {low:,.0f}-{high:,.0f})"
        )
    parse = results["parse"]
    targets = {"compiled": 0.35, "python": 0.15}
    for name, store in stores.items():
        stored = results[name]
        paired = sorted(s / p for s, p in zip(stored.rates, parse.rates, strict=True))
        stats = store.stats()
        print(
            f"  {name}: ratio stored/parsed {stored.sustained() / parse.rate():.3f} sustained"
            f" (closing checkpoint {stored.checkpoint_ns / 1e9:.2f} s), {stored.rate() / parse.rate():.3f} over the"
            f" rounds, {stored.cpu_rate() / parse.cpu_rate():.3f} per CPU-s; paired rounds median"
            f" {statistics.median(paired):.3f} (range {paired[0]:.3f}-{paired[-1]:.3f}); target >= {targets[name]}"
        )
        print(
            f"    {stats['spans']:,} spans stored (incl. warm-up), {stats['bytes'] / 2**20:.0f} MiB on disk"
        )
    print(f"  this process's RSS {psutil.Process().memory_info().rss / 2**20:.0f} MiB")


def ceiling(path: Path, stored: Path, parse: Mode) -> None:
    """(D) DuckDB alone: the stored rows inserted again, 20,000 a statement, into the same table and index.

    What any store of these rows in DuckDB costs before a byte is decoded or a body written: the ratio
    it would allow if the walker, the redactor and the segment writes cost nothing.
    """
    with duckdb.connect(str(path), config={"threads": 1}) as db:
        db.execute(SCHEMA).fetchall()
        db.execute(f"ATTACH '{stored}' AS stored (READ_ONLY)").fetchall()
        db.execute("CREATE TEMP TABLE staged AS SELECT * FROM stored.spans").fetchall()
        db.execute("DETACH stored").fetchall()
        rows = db.execute("SELECT count(*) FROM staged").fetchall()[0][0]
        gc.collect()
        began = time.perf_counter_ns()
        for offset in range(0, rows, 20_000):
            db.execute(f"INSERT INTO spans SELECT * FROM staged LIMIT 20000 OFFSET {offset}").fetchall()
        db.execute("CHECKPOINT").fetchall()
        took = time.perf_counter_ns() - began
    rate = rows / took * 1e9
    print(
        f"  (D) DuckDB alone, the same {rows:,} rows inserted again into the same table and index, then"
        f" checkpointed: {rate:,.0f} rows/s ({1e6 / rate:.2f} µs/row): the ceiling of the ratio with a free"
        f" walker and free segment writes is {rate / parse.rate():.3f}"
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
    parser.add_argument(
        "--cores", type=int, default=2, help="CPUs to pin to (default 2: the last two allowed)"
    )
    parser.add_argument(
        "--no-process", dest="process", action="store_false", help="skip (C), the real process"
    )
    parser.add_argument(
        "--records", type=int, default=100_000, help="log records and metric points in (E), (F)"
    )
    parser.add_argument(
        "--no-signals", dest="signals", action="store_false", help="skip (E) and (F), logs and metrics"
    )
    parser.add_argument(
        "--no-sampling", dest="sampling", action="store_false", help="skip (G), tail sampling"
    )
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    args.cpus = set(allowed[-max(1, args.cores) :])
    pin(args.cpus)
    if args.dir:
        folder = Path(args.dir)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.duckdb*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        measure(args, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
            measure(args, Path(tmp))


if __name__ == "__main__":
    main()
