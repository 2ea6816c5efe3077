"""What the mesh client path adds to a bare grpc.aio unary call on loopback, side by side in one run.

One product catalog runs in its own process (`boutique serve productcatalog`, static discovery, no
metrics port). This process calls GetProduct on it (a) through a bare grpc.aio stub and (b) through
`GrpcDependency` with a `StaticResolver` (resolve + pick + bulkhead + breaker + retry budget + metrics;
no OpenTelemetry SDK, so tracing is off), sequentially and (c) with `--concurrency` calls in flight.
Both clients use the same channel options, the same request and the same deadline; batches alternate
A B, B A, … so drift hits both alike. Also printed: (d) the mesh bookkeeping alone, with a transport
that answers at once, and (e) a control that runs that bookkeeping before a bare call. The ratio is mesh/bare of the mean time per call (target <= 1.05).
Both processes evaluate the shipped flag file, as under `boutique up` (`--no-flags`: none). (f) times one
evaluation of the mesh fault flags, and the fast path that skips it while the flags are off; (g) puts the
mesh call with its fast path side by side with the same call plus the evaluation it skips.
Usage: python benchmarks/mesh_overhead.py [--calls 20000] [--rounds 400] [--concurrency 16] [--profile] [--no-flags]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.flags import FlagFile
from boutique.mesh.dependency import CallPolicy
from boutique.mesh.discovery.static import StaticResolver
from boutique.mesh.faults import CALL_FAULT, GRAY_REPLICA, armed, call_fault
from boutique.mesh.flags import flags, install_flags
from boutique.mesh.grpc_client import CHANNEL_OPTIONS, GrpcDependency, status_of
from boutique.mesh.settings import FlagSettings
from boutique.run.ports import free_port
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc

TIMEOUT = 3.0  # the deadline both clients send (CallPolicy's default total timeout)
PRODUCT = "OLJCESPC7Z"

Call = Callable[[], Awaitable[Any]]
Runner = Callable[[Call, int, "Samples"], Awaitable[None]]


@dataclass
class Samples:
    """Per-call latencies (ns) of one client mode, and the wall time of its batches."""

    latencies: list[int] = field(default_factory=list)
    wall_ns: int = 0
    cpu_ns: int = 0
    calls: int = 0
    round_means: list[float] = field(default_factory=list)  # µs per call of each round (wall time / calls)

    def mean_us(self) -> float:
        """Mean per-call latency in µs."""
        return statistics.fmean(self.latencies) / 1000

    def pct_us(self, p: float) -> float:
        """Nearest-rank percentile of the latencies in µs."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] / 1000

    def wall_us(self) -> float:
        """Wall time per call in µs (the inverse of throughput)."""
        return self.wall_ns / self.calls / 1000

    def cpu_us(self) -> float:
        """CPU time of this (client) process per call in µs, all its threads together."""
        return self.cpu_ns / self.calls / 1000

    def add(self, wall_ns: int, cpu_ns: int, calls: int) -> None:
        """Account one batch."""
        self.round_means.append(wall_ns / calls / 1000)
        self.wall_ns += wall_ns
        self.cpu_ns += cpu_ns
        self.calls += calls


SERVE_CATALOG = [sys.executable, "-m", "boutique.cli", "serve", "productcatalog", "--log-level", "WARNING"]


@contextlib.contextmanager
def catalog_process(
    base_env: Mapping[str, str] | None = None, command_for: Callable[[int], list[str]] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes], IO[bytes]]]:
    """Run a catalog (`boutique serve productcatalog` unless `command_for(port)` says otherwise) on a free
    loopback port, no metrics port, static discovery; yield address, process, log; stop it."""
    port = free_port()
    env = {
        **(os.environ if base_env is None else base_env),
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "BOUTIQUE_METRICS": "off",
        "BOUTIQUE_DISCOVERY": "static",
    }
    command = command_for(port) if command_for else SERVE_CATALOG
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield f"127.0.0.1:{port}", proc, log
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def wait_serving(
    address: str, proc: subprocess.Popen[bytes], log: IO[bytes], limit: float = 30.0
) -> None:
    """Poll gRPC health until SERVING; exit with the server's log if it dies or never gets there."""
    ends = time.monotonic() + limit
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < ends and proc.poll() is None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
    log.seek(0)
    raise SystemExit(f"the catalog did not become SERVING:\n{log.read().decode(errors='replace')[-2000:]}")


async def sequential(call: Call, count: int, into: Samples) -> None:
    """`count` calls one after another, each timed."""
    clock = time.perf_counter_ns
    latencies = into.latencies
    began, cpu = clock(), time.process_time_ns()
    for _ in range(count):
        start = clock()
        await call()
        latencies.append(clock() - start)
    into.add(clock() - began, time.process_time_ns() - cpu, count)


async def concurrent(call: Call, count: int, width: int, into: Samples) -> None:
    """`count` calls from `width` workers, each worker sequential; every call timed."""
    clock = time.perf_counter_ns
    latencies = into.latencies
    share, extra = divmod(count, width)

    async def worker(calls: int) -> None:
        for _ in range(calls):
            start = clock()
            await call()
            latencies.append(clock() - start)

    began, cpu = clock(), time.process_time_ns()
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(width)))
    into.add(clock() - began, time.process_time_ns() - cpu, count)


async def interleaved(modes: dict[str, Call], rounds: int, per_round: int, run: Runner) -> dict[str, Samples]:
    """Run each mode's batch once per round, the order alternating every round (A B, B A, …)."""
    results = {name: Samples() for name in modes}
    order = list(modes)
    for number in range(rounds):
        for name in order if number % 2 == 0 else order[::-1]:
            gc.collect()
            await run(modes[name], per_round, results[name])
    return results


def report(
    title: str, results: dict[str, Samples], wall: bool = False, base: str = "bare", other: str = "mesh"
) -> tuple[float, float]:
    """Print one table; return other/base of the mean time per call and the median of the paired rounds.

    The first is the ratio of the means (latency, or wall time when `wall`); the second pairs each
    `other` round with the `base` round next to it, so a burst of noise on this shared machine moves one
    pair, not the answer.
    """
    print(title)
    for name, samples in results.items():
        line = (
            f"  {name:<5} mean {samples.mean_us():7.1f} µs  p50 {samples.pct_us(50):7.1f} µs"
            f"  p99 {samples.pct_us(99):7.1f} µs  client CPU {samples.cpu_us():6.1f} µs/call"
        )
        if wall:
            line += f"  {1e6 / samples.wall_us():,.0f} calls/s ({samples.wall_us():.1f} µs/call)"
        print(line)
    bare, mesh = results[base], results[other]
    ours, theirs = (mesh.wall_us(), bare.wall_us()) if wall else (mesh.mean_us(), bare.mean_us())
    what = "wall time per call" if wall else "mean latency"
    paired = sorted(m / b for m, b in zip(mesh.round_means, bare.round_means, strict=True))
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    print(
        f"  {other}/{base}: {what} {ours / theirs:.3f} ({ours - theirs:+.1f} µs),"
        f" p50 {mesh.pct_us(50) / bare.pct_us(50):.3f},"
        f" client CPU {mesh.cpu_us() / bare.cpu_us():.3f} ({mesh.cpu_us() - bare.cpu_us():+.1f} µs)"
    )
    print(
        f"  paired rounds: median {other}/{base} {quartiles[1]:.3f}"
        f" (interquartile {quartiles[0]:.3f}-{quartiles[2]:.3f}, {len(paired)} rounds)"
    )
    return ours / theirs, quartiles[1]


async def bookkeeping_only(dependency: GrpcDependency, count: int) -> float:
    """µs per call of the mesh path around a transport that answers at once (no network, no wait)."""
    answer = pb.Product(id=PRODUCT)

    async def attempt(conn: Any, per_try: float) -> pb.Product:
        return answer

    async def call() -> Any:
        return await dependency.invoke("GetProduct", attempt, status_of, retryable=True)

    await sequential(call, count, Samples())  # warm
    samples = Samples()
    await sequential(call, count, samples)
    return samples.mean_us()


async def bookkeeping_then_bare(
    dependency: GrpcDependency, stub: Any, request: pb.GetProductRequest, rounds: int, per_round: int
) -> float:
    """Mean latency ratio to bare of: the mesh path on an instant transport, then a bare call."""
    answer = pb.Product(id=PRODUCT)

    async def instant(conn: Any, per_try: float) -> pb.Product:
        return answer

    async def control() -> Any:
        await dependency.invoke("GetProduct", instant, status_of, retryable=True)
        return await stub.GetProduct(request, timeout=TIMEOUT)

    modes: dict[str, Call] = {"bare": lambda: stub.GetProduct(request, timeout=TIMEOUT), "control": control}
    results = await interleaved(modes, rounds, per_round, sequential)
    return results["control"].mean_us() / results["bare"].mean_us()


def timed_us(work: Callable[[], Any], count: int) -> float:
    """µs per run of `work`, the mean of `count` runs after as many to warm up."""
    for _ in range(count):
        work()
    began = time.perf_counter_ns()
    for _ in range(count):
        work()
    return (time.perf_counter_ns() - began) / count / 1000


def flag_costs(dependency: GrpcDependency, count: int) -> dict[str, float]:
    """µs per call of: the fast path while the fault flags are off, and one evaluation of each flag."""
    caller, callee = dependency.caller, dependency.name

    def fast_path() -> Any:
        return call_fault(caller, callee, "GetProduct", dependency.injected_error)

    def client_evaluation() -> Any:
        return flags().object(CALL_FAULT, caller=caller, callee=callee, method="GetProduct")

    def server_evaluation() -> Any:
        return flags().number(GRAY_REPLICA)

    return {
        "fast path (flags off)": timed_us(fast_path, count),
        f"{CALL_FAULT} evaluation (client, per call)": timed_us(client_evaluation, count),
        f"{GRAY_REPLICA} evaluation (server, per call)": timed_us(server_evaluation, count),
    }


async def profile(dependency: GrpcDependency, request: pb.GetProductRequest, count: int) -> str:
    """cProfile `count` sequential mesh calls; the top functions by own time, as text."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        await dependency.call("GetProduct", request, idempotent=True)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(30)
    return out.getvalue()


async def measure(address: str, args: argparse.Namespace) -> None:
    """Warm both clients, measure them side by side, print the tables and the ratios."""
    request = pb.GetProductRequest(id=PRODUCT)
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    stub = pb_grpc.ProductCatalogServiceStub(channel)
    dependency = GrpcDependency(
        "productcatalog",
        StaticResolver([address]),
        pb_grpc.ProductCatalogServiceStub,
        CallPolicy(timeout=TIMEOUT),
        caller="bench",
    )
    modes: dict[str, Call] = {
        "bare": lambda: stub.GetProduct(request, timeout=TIMEOUT),
        "mesh": lambda: dependency.call("GetProduct", request, idempotent=True),
    }

    async def wide(call: Call, count: int, into: Samples) -> None:
        await concurrent(call, count, args.concurrency, into)

    try:
        for call in modes.values():  # connect, then warm both paths (and the server)
            await sequential(call, args.warmup, Samples())
            await wide(call, args.warmup, Samples())
        per_round = max(1, args.calls // args.rounds)
        print(
            f"GetProduct to a catalog in another process on loopback: {args.rounds} interleaved rounds of "
            f"{per_round} calls per mode (Python {sys.version.split()[0]}, grpcio {grpc.__version__})"
        )
        seq = report(
            "(a) bare vs (b) mesh, sequential:", await interleaved(modes, args.rounds, per_round, sequential)
        )
        conc = report(
            f"(c) concurrency {args.concurrency}:",
            await interleaved(modes, args.rounds, per_round, wide),
            wall=True,
        )
        own = await bookkeeping_only(dependency, max(2000, per_round))
        print(f"(d) mesh bookkeeping alone (transport answers at once): {own:.1f} µs per call")
        control = await bookkeeping_then_bare(dependency, stub, request, args.rounds, per_round)
        print(
            f"(e) control: the same bookkeeping run before a bare call, not around it: {control:.3f} of bare"
            " (close to (b) means the cost is the Python run between network waits, not the wrapping)"
        )
        if args.flags:
            await flag_overhead(dependency, request, stub, args, per_round)
        print(
            f"ratio mesh/bare (median of paired rounds): sequential {seq[1]:.3f},"
            f" concurrency {args.concurrency} {conc[1]:.3f}"
            f"; of the means: {seq[0]:.3f} and {conc[0]:.3f} (target <= 1.05)"
        )
        if args.profile:
            print(f"\ncProfile of {args.profile_calls} sequential mesh calls, by own time:")
            print(await profile(dependency, request, args.profile_calls))
    finally:
        await dependency.close()
        await channel.close()


async def flag_overhead(
    dependency: GrpcDependency,
    request: pb.GetProductRequest,
    stub: Any,
    args: argparse.Namespace,
    per_round: int,
) -> None:
    """(f) what one evaluation of the fault flags costs, against a bare call; (g) the mesh call with its
    fast path beside the same call plus the evaluation the fast path skips."""
    assert not armed().may_fire(CALL_FAULT), "the shipped flags inject no fault"
    costs = flag_costs(dependency, max(5000, per_round * 20))
    bare = Samples()
    await sequential(lambda: stub.GetProduct(request, timeout=TIMEOUT), max(2000, per_round * 10), bare)
    print(f"(f) flag evaluation, µs per call (a bare call here: {bare.mean_us():.1f} µs):")
    for what, cost in costs.items():
        print(f"  {what:<46} {cost:7.2f} µs  = {cost / bare.mean_us() * 100:5.2f} % of a bare call")

    async def evaluating() -> Any:
        flags().object(CALL_FAULT, caller=dependency.caller, callee=dependency.name, method="GetProduct")
        return await dependency.call("GetProduct", request, idempotent=True)

    modes: dict[str, Call] = {
        "fast": lambda: dependency.call("GetProduct", request, idempotent=True),
        "eval": evaluating,
    }
    report(
        "(g) mesh call with the fast path (fast) vs evaluating the fault flag on every call (eval), sequential:",
        await interleaved(modes, args.rounds, per_round, sequential),
        base="fast",
        other="eval",
    )


async def main_async(args: argparse.Namespace) -> None:
    """Seed the shipped flag file for both processes (unless --no-flags), start the catalog, measure."""
    with tempfile.TemporaryDirectory(prefix="mesh-overhead-") as scratch:
        env = dict(os.environ)
        if args.flags:
            path = FlagFile(os.path.join(scratch, "flags.json"))
            path.seed()
            env["FLAGD_OFFLINE_FLAG_SOURCE_PATH"] = str(path.path)
            install_flags(FlagSettings(source_path=str(path.path)), "bench", "bench-0")
        with catalog_process(env) as (address, proc, log):
            await wait_serving(address, proc, log)
            await measure(address, args)


def main() -> None:
    """Parse the sizes and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per mode per measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=400,
        help="interleaved rounds the calls are split into (short rounds pair up closely in time)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight for (c)")
    parser.add_argument("--warmup", type=int, default=2000, help="warm-up calls per mode")
    parser.add_argument("--profile", action="store_true", help="also cProfile the mesh path")
    parser.add_argument("--profile-calls", type=int, default=5000, help="calls to profile")
    parser.add_argument(
        "--no-flags", dest="flags", action="store_false", help="no flag file in either process (skips f, g)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
