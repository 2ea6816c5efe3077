"""What tracing every request (sampled at 100 %) costs: a checkout and one RPC, traced vs not, in one run.

(A) Two whole shops run at once (`boutique up --plain --no-load`): "off" with OTEL_SDK_DISABLED=true and
no observatory; "on" as a user gets it, every span exported over OTLP/gRPC to the observatory `up`
starts. One HTTP session per shop adds a product to its cart, then checks out; only the checkout POST
is timed. Rounds alternate the order (off on, on off, …), and the CPU time of every process of each
shop during the rounds is summed too. (B) GetProduct on loopback, one call at a time, to a catalog in a
process of its own, four ways, each client in a process of its own (a tracer provider can be set once
per process) driven round by round from here, in alternating order: `bare` (a grpc.aio stub) and
`mesh off` (GrpcDependency), both to untraced catalogs; `mesh traced`, the SDK on at both ends (the
catalog with OTEL_TRACES_EXPORTER=none makes its spans and hands them to no processor; the client
batches its spans, then drops them: the cost of making spans, not of exporting them); `contrib`, a bare
stub and server with OpenTelemetry's contrib gRPC interceptors, both batching and dropping their
spans: the anchor for what a span per call costs in Python (opentelemetry-instrumentation-grpc, in the
dev extras: `make bench` installs them).
Usage: python benchmarks/tracing_overhead.py [--rounds 30] [--per-round 10] [--calls 12000]
       [--rpc-rounds 80] [--skip-checkout] [--skip-rpc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import httpx
import psutil
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from mesh_overhead import catalog_process
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from boutique.mesh.dependency import CallPolicy
from boutique.mesh.discovery.static import StaticResolver
from boutique.mesh.grpc_client import CHANNEL_OPTIONS, GrpcDependency
from boutique.mesh.propagation import install_propagators
from boutique.mesh.server import MAX_MESSAGE_BYTES, generic_handler
from boutique.run.ports import free_port
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc

PRODUCT = "OLJCESPC7Z"
TIMEOUT = 3.0  # the deadline every RPC client sends (CallPolicy's default total timeout)
ATTEMPTS = 2  # a shop that does not come up is started again once, on other ports
SHOPS = ("off", "on")
MODES = ("bare", "mesh off", "mesh traced", "contrib")
WARM_CHECKOUTS = 20
WARM_CALLS = 1500


# ---- shared: samples and ratios ------------------------------------------------------------------


@dataclass
class Samples:
    """Latencies of one mode (in its own unit), and the mean of each of its rounds."""

    latencies: list[float] = field(default_factory=list)
    round_means: list[float] = field(default_factory=list)

    def add(self, latencies: Sequence[float]) -> None:
        """Account one round."""
        self.latencies.extend(latencies)
        self.round_means.append(statistics.fmean(latencies))

    def mean(self) -> float:
        """Mean latency."""
        return statistics.fmean(self.latencies)

    def pct(self, p: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Ratio:
    """How much slower `top` is than `bottom`: of the means, of the medians, and round by round."""

    mean: float
    p50: float
    paired: float  # median of the per-round ratios
    low: float  # their first and third quartiles
    high: float

    @classmethod
    def of(cls, top: Samples, bottom: Samples) -> Ratio:
        """Compare two modes measured in the same interleaved rounds."""
        return cls(top.mean() / bottom.mean(), top.pct(50) / bottom.pct(50), *paired(top, bottom))

    def text(self) -> str:
        """One line's worth."""
        return (
            f"mean {self.mean:.3f}, p50 {self.p50:.3f}, paired rounds median {self.paired:.3f}"
            f" (interquartile {self.low:.3f}-{self.high:.3f})"
        )


def paired(top: Samples, bottom: Samples) -> tuple[float, float, float]:
    """Median and quartiles of top/bottom round by round: noise on this shared machine moves a pair, not all."""
    pairs = sorted(t / b for t, b in zip(top.round_means, bottom.round_means, strict=True))
    low, median, high = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
    return median, low, high


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without OTEL_* settings (each child gets exactly the ones it needs)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **extra}


# ---- (A) two shops, checkouts ----------------------------------------------------------------------


class Shop:
    """One `boutique up --plain --no-load` in a child process, its stdout read by a thread."""

    def __init__(self, name: str, traced: bool, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{free_port()}"
        self.lines: list[str] = []
        self.ready = threading.Event()
        command = [sys.executable, "-m", "boutique.cli", "up", "--plain", "--no-load"]
        command += ["--frontend-port", self.url.rpartition(":")[2], "--registry-port", str(free_port())]
        ports = [free_port() for _ in range(4)]  # OTLP/gRPC, OTLP/HTTP, Zipkin, query API
        command += ["--observatory-ports", ",".join(map(str, ports))]
        self.observatory = f"http://127.0.0.1:{ports[3]}" if traced else None
        command += ["--data-dir", str(data_dir)]
        env = clean_env(**(env or {})) if traced else clean_env(OTEL_SDK_DISABLED="true")
        if not traced:
            command.append("--no-observatory")
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        """Keep every line (the pipe never fills), noting whether and when the shop is ready."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "Boutique is up" in line or line.startswith("not ready after"):
                self.ready.set()

    def wait_ready(self) -> str | None:
        """Block until `up` says the shop is up (None) or gives up on it (what went wrong)."""
        deadline = time.monotonic() + 120.0  # `up` itself gives up after 60 s (its --ready-timeout)
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if any("Boutique is up" in line for line in self.lines):
            return None
        failing = {line.partition(":")[0] for line in self.lines if ": exited" in line}
        reasons = [*self.lines[-3:]]
        for instance in sorted(failing):
            log = self.data_dir / "logs" / f"{instance}.log"
            last = log.read_text(errors="replace").strip().splitlines()[-2:] if log.exists() else []
            reasons += [f"{instance}.log: {line[:300]}" for line in last]
        return "\n".join(reasons)

    def cpu_seconds(self) -> dict[int, float]:
        """User + system CPU seconds of `up` and every process below it, by pid."""
        seconds: dict[int, float] = {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    seconds[process.pid] = times.user + times.system
        return seconds

    def spans_accepted(self) -> tuple[int, int] | None:
        """Spans the shop's observatory has accepted and refused so far (None without one)."""
        if self.observatory is None:
            return None
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            status = httpx.get(f"{self.observatory}/api/status", timeout=5.0).json()
            return int(status["accepted_spans"]), int(status["refused_spans"])
        return None

    def stop(self) -> None:
        """SIGINT (up stops all its children), then wait; kill the group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_shop(name: str, root: Path, traced: bool | None = None, env: dict[str, str] | None = None) -> Shop:
    """Start shop `name` (traced: by default "on" is) with `env` added, and wait until it is up, trying
    again once if it fails to."""
    for attempt in range(1, ATTEMPTS + 1):
        shop = Shop(name, name == "on" if traced is None else traced, root / f"{name}-{attempt}", env)
        trouble = shop.wait_ready()
        if trouble is None:
            return shop
        shop.stop()
        print(f"(A) shop {name!r} did not come up (attempt {attempt}):\n{trouble}", flush=True)
    raise SystemExit(f"shop {name!r} did not come up in {ATTEMPTS} attempts")


def checkout_form() -> dict[str, str]:
    """What a shopper submits at checkout: a sample address and the valid test Visa card."""
    return {
        "email": "someone@example.com",
        "street_address": "221 Harbour Road",
        "zip_code": "94107",
        "city": "San Francisco",
        "state": "CA",
        "country": "United States",
        "credit_card_number": "4432-8015-6152-0454",
        "credit_card_expiration_month": "1",
        "credit_card_expiration_year": str(datetime.date.today().year + 1),
        "credit_card_cvv": "672",
    }


def checkout(client: httpx.Client, form: dict[str, str]) -> float:
    """Put one product in the cart, then check out; ms the checkout POST took."""
    added = client.post("/cart", data={"product_id": PRODUCT, "quantity": "1"})
    began = time.perf_counter()
    placed = client.post("/cart/checkout", data=form)
    took = (time.perf_counter() - began) * 1000
    for response in (added, placed):
        if response.status_code != 200:
            raise SystemExit(
                f"{response.request.method} {response.request.url} answered {response.status_code}:"
                f" {response.text[:500]}"
            )
    return took


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots (a process started in between counts from zero)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def log_findings(shop: Shop, run_lines: Sequence[str]) -> list[str]:
    """Warnings, errors and stray output in the shop's process logs, and anything `up` said while measured."""
    counts: Counter[tuple[str, str, str]] = Counter()
    logs = sorted((shop.data_dir / "logs").glob("*.log"))
    if not logs:
        return [f"no logs found in {shop.data_dir / 'logs'}"]
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                level, event = str(entry.get("level", "")), str(entry.get("event", ""))
            except (ValueError, AttributeError):
                level, event = "raw", line.strip()  # not our JSON: a traceback, the C core, a library
            if level in ("warning", "error", "critical", "raw"):
                counts[(path.stem, level, event[:110])] += 1
    found = [f"{n:4d} x {instance} {level}: {event}" for (instance, level, event), n in counts.most_common(8)]
    if len(counts) > 8:
        found.append(f"      … and {len(counts) - 8} more kinds")
    found += [f"      up said while measured: {line}" for line in run_lines[:5]]
    return found


def measure_checkouts(args: argparse.Namespace) -> float:
    """(A): start both shops, warm them, measure interleaved rounds, print; returns the on/off mean ratio."""
    with tempfile.TemporaryDirectory(prefix="tracing-bench-") as tmp:
        shops: dict[str, Shop] = {}
        clients: list[httpx.Client] = []
        try:
            began = time.monotonic()
            for name in SHOPS:  # one after the other: the second plan's ports avoid the first's
                shops[name] = start_shop(name, Path(tmp))
            print(f"(A) both shops up in {time.monotonic() - began:.1f}s; warming up", flush=True)
            form = checkout_form()
            sessions = {}
            for name, shop in shops.items():
                sessions[name] = httpx.Client(base_url=shop.url, follow_redirects=True, timeout=30.0)
                clients.append(sessions[name])
            for _ in range(args.warmup_checkouts):
                for session in sessions.values():
                    checkout(session, form)
            results = {name: Samples() for name in SHOPS}
            marks = {name: len(shop.lines) for name, shop in shops.items()}
            spans_before = shops["on"].spans_accepted()
            cpu_before = {name: shop.cpu_seconds() for name, shop in shops.items()}
            for number in range(args.rounds):
                for name in SHOPS if number % 2 == 0 else SHOPS[::-1]:
                    gc.collect()
                    results[name].add([checkout(sessions[name], form) for _ in range(args.per_round)])
                if (number + 1) % 10 == 0 or number + 1 == args.rounds:
                    print(f"    round {number + 1}/{args.rounds}", flush=True)
            cpu = {name: cpu_spent(cpu_before[name], shop.cpu_seconds()) for name, shop in shops.items()}
            run_lines = {name: shop.lines[marks[name] :] for name, shop in shops.items()}
            spans_after = shops["on"].spans_accepted()
        finally:
            for client in clients:
                client.close()
            for shop in shops.values():
                shop.stop()
        checkouts = args.rounds * args.per_round
        print(
            f"(A) checkout latency, {args.rounds} interleaved rounds of {args.per_round} per shop"
            " (timed: POST /cart/checkout only; CPU: every process of the shop, incl. the add-to-cart"
            " before each checkout and, for 'on', the observatory)"
        )
        for name in SHOPS:
            samples = results[name]
            print(
                f"  {name:<3} mean {samples.mean():6.1f} ms  p50 {samples.pct(50):6.1f} ms"
                f"  p99 {samples.pct(99):6.1f} ms  CPU {cpu[name] / checkouts * 1000:6.1f} ms/checkout"
            )
        ratio = Ratio.of(results["on"], results["off"])
        print(f"  on/off latency: {ratio.text()}")
        print(f"  on/off CPU per checkout: {cpu['on'] / cpu['off']:.3f}")
        if spans_before is not None and spans_after is not None:
            accepted, refused = (
                after - before for after, before in zip(spans_after, spans_before, strict=True)
            )
            print(
                f"  the observatory accepted {accepted / checkouts:.0f} spans per checkout (with its add-to-cart;"
                f" up to 5 s of batching lag at either end), refused {refused}"
            )
        else:
            print("  the observatory's /api/status did not answer: were spans exported?")
        for name, shop in shops.items():
            findings = log_findings(shop, run_lines[name])
            logs = len(list((shop.data_dir / "logs").glob("*.log")))
            print(
                f"  shop {name}, {logs} process logs: " + ("clean" if not findings else "warnings or errors")
            )
            for line in findings:
                print(f"    {line}")
        return ratio.mean


# ---- (B) one RPC, four ways, clients in child processes ------------------------------------------


class DropSpans(SpanExporter):
    """An exporter that accepts every batch and does nothing with it: spans cost their making only."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Drop the batch."""
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def dropping_provider(service: str) -> TracerProvider:
    """A tracer provider that makes and batches spans as the shop's does, then drops them."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    return provider


async def wait_serving(address: str, limit: float = 60.0) -> None:
    """Poll gRPC health until the server at `address` is SERVING."""
    ends = time.monotonic() + limit
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < ends:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
    raise SystemExit(f"the catalog at {address} did not become SERVING")


async def client_main(mode: str, address: str) -> None:
    """Child: build the mode's client, then run one batch of calls per line on stdin, answering in JSON.

    `run N` answers the batch's wall time per call in µs; `stats` answers mean, p50, p99 of every
    call timed so far and this process's CPU per call, then ends.
    """
    request = pb.GetProductRequest(id=PRODUCT)
    channel: grpc.aio.Channel | None = None
    dependency: GrpcDependency | None = None
    if mode == "mesh traced":  # as setup_tracing does in every shop process, minus the export
        install_propagators()
        trace.set_tracer_provider(dropping_provider("bench"))
    if mode in ("bare", "contrib"):
        interceptors = None
        if mode == "contrib":
            from opentelemetry.instrumentation.grpc import aio_client_interceptors

            interceptors = aio_client_interceptors(tracer_provider=dropping_provider("bench"))
        channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)
        stub = pb_grpc.ProductCatalogServiceStub(channel)

        def call() -> Awaitable[Any]:
            return stub.GetProduct(request, timeout=TIMEOUT)  # type: ignore[no-any-return]

    else:
        resolver = StaticResolver([address])
        dependency = GrpcDependency(
            "productcatalog",
            resolver,
            pb_grpc.ProductCatalogServiceStub,
            CallPolicy(timeout=TIMEOUT),
            "bench",
        )

        def call() -> Awaitable[Any]:
            assert dependency is not None
            return dependency.call("GetProduct", request, idempotent=True)

    await wait_serving(address)
    await call()
    clock = time.perf_counter_ns
    latencies: list[int] = []
    cpu_ns = 0
    loop = asyncio.get_running_loop()
    reply: dict[str, Any] = {"ready": mode}
    try:
        while True:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "stats":
                break
            count, keep = int(line[1]), line[0] == "run"
            gc.collect()
            times: list[int] = []
            cpu, began = time.process_time_ns(), clock()
            for _ in range(count):
                start = clock()
                await call()
                times.append(clock() - start)
            wall = clock() - began
            if keep:
                cpu_ns += time.process_time_ns() - cpu
                latencies += times
            reply = {"us": wall / count / 1000}
        ordered = sorted(latencies)
        if ordered:
            reply = {
                "mean": statistics.fmean(ordered) / 1000,
                "p50": ordered[len(ordered) // 2] / 1000,
                "p99": ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)] / 1000,
                "cpu": cpu_ns / len(ordered) / 1000,
            }
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        if dependency is not None:
            await dependency.close()
        if channel is not None:
            await channel.close()
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.shutdown()


async def contrib_catalog_main(port: int) -> None:
    """Child: the shop's catalog behind OpenTelemetry's contrib server interceptor, spans dropped.

    No provider is installed globally, so the mesh's own server spans stay off: the contrib interceptor
    makes the only span, with a provider of its own.
    """
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    from boutique.shop.productcatalog.server import bindings

    provider = dropping_provider("productcatalog")
    server = grpc.aio.server(
        interceptors=[aio_server_interceptor(tracer_provider=provider)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)],
    )
    checker = health.aio.HealthServicer()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_generic_rpc_handlers([generic_handler(b, f"productcatalog-{os.getpid()}") for b in bindings()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    provider.shutdown()


@contextlib.contextmanager
def catalog(mode: str) -> Iterator[tuple[str, IO[bytes]]]:
    """The catalog process `mode` calls, on a free loopback port; yields its address and log; stops it."""

    def contrib_catalog(port: int) -> list[str]:
        return [sys.executable, __file__, "--contrib-catalog", str(port)]

    if mode == "contrib":  # its own server with the contrib interceptor and a tracer provider of its own
        env, command_for = clean_env(), contrib_catalog
    elif mode == "mesh traced":
        env, command_for = clean_env(OTEL_TRACES_EXPORTER="none"), None  # spans made, none exported
    else:
        env, command_for = clean_env(OTEL_SDK_DISABLED="true"), None
    with catalog_process(env, command_for) as (address, _, log):
        yield address, log


class Client:
    """One client child process (`--client MODE`), asked one line at a time."""

    def __init__(self, mode: str, address: str, log: IO[bytes]) -> None:
        self.mode = mode
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--client", mode, "--address", address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )

    def answer(self) -> dict[str, Any]:
        """The next reply; exit with the catalog's log if the client died."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            server_log = self.log.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"the {self.mode!r} client ended early; its catalog's log:\n{server_log}")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: str) -> dict[str, Any]:
        """Send one command, return its reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        """Close its stdin (it ends) and wait."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure_rpcs(args: argparse.Namespace) -> tuple[float, float]:
    """(B): four catalogs, four clients, interleaved rounds; returns ours and contrib's traced/off."""
    per_round = max(1, args.calls // args.rpc_rounds)
    with contextlib.ExitStack() as stack:
        clients: dict[str, Client] = {}
        for mode in MODES:
            address, log = stack.enter_context(catalog(mode))
            clients[mode] = Client(mode, address, log)
            stack.callback(clients[mode].close)
        for client in clients.values():
            client.answer()  # ready: the catalog serves and one call went through
        print(f"(B) 4 catalogs and 4 clients ready; warming up ({args.rpc_warmup} calls each)", flush=True)
        for client in clients.values():
            client.ask(f"warm {args.rpc_warmup}")
        results = {mode: Samples() for mode in MODES}
        for number in range(args.rpc_rounds):
            for mode in MODES if number % 2 == 0 else MODES[::-1]:
                results[mode].round_means.append(clients[mode].ask(f"run {per_round}")["us"])
            if (number + 1) % 20 == 0 or number + 1 == args.rpc_rounds:
                print(f"    round {number + 1}/{args.rpc_rounds}", flush=True)
        stats = {mode: client.ask("stats") for mode, client in clients.items()}
    print(
        f"(B) GetProduct to a catalog in another process on loopback, sequential: {args.rpc_rounds}"
        f" interleaved rounds of {per_round} calls per mode (Python {sys.version.split()[0]},"
        f" grpcio {grpc.__version__})"
    )
    for mode in MODES:
        s = stats[mode]
        print(
            f"  {mode:<11} mean {s['mean']:7.1f} µs  p50 {s['p50']:7.1f} µs  p99 {s['p99']:7.1f} µs"
            f"  client CPU {s['cpu']:6.1f} µs/call"
        )
    ratios: dict[tuple[str, str], float] = {}
    for top, bottom, meaning in (
        ("mesh off", "bare", "the mesh, untraced"),
        ("mesh traced", "bare", "the mesh, traced at both ends"),
        ("contrib", "bare", "contrib interceptors at both ends: the anchor"),
        ("mesh traced", "mesh off", "what tracing adds to a mesh call"),
    ):
        mean = stats[top]["mean"] / stats[bottom]["mean"]
        p50 = stats[top]["p50"] / stats[bottom]["p50"]
        median, low, high = paired(results[top], results[bottom])
        ratios[(top, bottom)] = mean
        print(
            f"  {top}/{bottom}: mean {mean:.3f} ({stats[top]['mean'] - stats[bottom]['mean']:+.1f} µs),"
            f" p50 {p50:.3f}, paired rounds median {median:.3f} (interquartile {low:.3f}-{high:.3f})"
            f"  [{meaning}]"
        )
    return ratios[("mesh traced", "mesh off")], ratios[("contrib", "bare")]


# ---- entry -----------------------------------------------------------------------------------------


def main() -> None:
    """Parse the sizes and run (A), (B) and the summary line; or be one of (B)'s child processes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="(A) interleaved rounds")
    parser.add_argument("--per-round", type=int, default=10, help="(A) checkouts per shop per round")
    parser.add_argument("--warmup-checkouts", type=int, default=WARM_CHECKOUTS, help="(A) per shop")
    parser.add_argument("--calls", type=int, default=12000, help="(B) calls per mode")
    parser.add_argument("--rpc-rounds", type=int, default=80, help="(B) interleaved rounds")
    parser.add_argument("--rpc-warmup", type=int, default=WARM_CALLS, help="(B) warm-up calls per mode")
    parser.add_argument("--skip-checkout", action="store_true", help="skip (A)")
    parser.add_argument("--skip-rpc", action="store_true", help="skip (B)")
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--contrib-catalog", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_main(args.client, args.address))
        return
    if args.contrib_catalog:
        asyncio.run(contrib_catalog_main(args.contrib_catalog))
        return
    checkout_ratio = "n/a" if args.skip_checkout else f"{measure_checkouts(args):.2f}"
    ours, contrib = ("n/a", "n/a") if args.skip_rpc else (f"{r:.2f}" for r in measure_rpcs(args))
    print(
        f"ratio traced/off: checkout {checkout_ratio} (mean), per RPC: ours {ours}, contrib instrumentors {contrib}"
    )


if __name__ == "__main__":
    main()
