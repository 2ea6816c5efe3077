"""Real shop processes profile themselves and send OTLP profiles whose samples lead to their spans.

`boutique serve ad` runs with the adHighCpu flag on (each GetAds burns CPU inside its server span, and a
burner thread burns outside any span), its OTLP going to a receiver of our own. From what it sent: the
`burn` frame dominates the cpu profile; every sample linked to a span was taken on the thread that
served it (the event loop's) within that span's start and end, as the same process reported the span.

Under many short GetAds (no flag), the main thread's cpu samples, taken by SIGPROF, fall inside the
calls and their spans rather than at the loop's select (printed beside what the sampling thread alone
sees). The catalog with its lock fault shows its queued calls in the "tasks" profile: awaiting the lock
in `DatabaseLock.query`, each linked to its own call's span.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.flags import FlagFile
from boutique.shop.ad.faults import AD_HIGH_CPU
from boutique.shop.productcatalog.faults import PRODUCT_CATALOG_DB_LOCK
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc
from tests.mesh.otlp_receiver import OtlpReceiver, ProfileSample, profile_samples, wait_for

RECEIVER_PORT, AD_PORT, METRICS_PORT, CATALOG_PORT = 47110, 47111, 47112, 47113
LOAD_SECONDS = 4.0
LOAD_CALLERS = 16
BURN = "burn"
BURN_FILE = "boutique/shop/ad/faults.py"
CALLS = 8


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on a port of this test's range."""
    running = OtlpReceiver(RECEIVER_PORT).start()
    try:
        yield running
    finally:
        running.stop()


def serve_ad(receiver: OtlpReceiver, flags: Path, service: str = "ad", **extra: str) -> subprocess.Popen[str]:
    """`boutique serve <service>` (ad by default) with its telemetry to `receiver` and profiles sent every
    half second."""
    environ = {
        **os.environ,
        "PORT": str(AD_PORT if service == "ad" else CATALOG_PORT),
        "METRICS_PORT": str(METRICS_PORT),
        "BIND_HOST": "127.0.0.1",
        "BOUTIQUE_DISCOVERY": "static",
        "FLAGD_OFFLINE_FLAG_SOURCE_PATH": str(flags),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "BOUTIQUE_PROFILING_EXPORT_INTERVAL": "0.5",
        "BOUTIQUE_EXPORT_RETRY_MAX": "0.2",
        "BOUTIQUE_LOG_STREAM": "stderr",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "boutique.cli", "serve", service],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


def metric(text: str, name: str) -> float:
    """One sample's value from Prometheus text (its full name with labels, as written)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not on /metrics"
    return float(found.group(1))


def test_an_ad_process_sends_cpu_profiles_dominated_by_burn_with_samples_inside_their_spans(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    flags = FlagFile(tmp_path / "flags.json")
    flags.seed()
    flags.set(AD_HIGH_CPU, "on", by="test")
    process = serve_ad(receiver, flags.path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{AD_PORT}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            ads = demo_pb2_grpc.AdServiceStub(channel)
            for _ in range(CALLS):
                assert ads.GetAds(pb.AdRequest(context_keys=["kitchen"]), timeout=30).ads
        wait_for(
            lambda: any(s.type == "cpu" and s.has(BURN) and s.span_id for s in receiver.profile_samples()),
            "cpu samples of burn inside a span",
        )
        scraped = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        ticks = metric(scraped, "boutique_mesh_profiler_ticks_total")
        rate = metric(scraped, 'boutique_mesh_profiler_rate_hertz{rate="effective"}')
        spent = metric(scraped, "boutique_mesh_profiler_tick_seconds_sum")
        print(
            f"\nad profiler: {ticks:.0f} ticks, {rate:.1f} Hz achieved, {spent / ticks * 1e6:.0f} us per tick"
        )
        assert ticks > 0 and metric(scraped, 'boutique_mesh_profiler_samples_total{type="cpu"}') > 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors[-3000:]
    lines = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    setup = next(line for line in lines if line["event"] == "tracing")
    assert setup["profiling"].endswith("at 100 Hz every 0.5 s (cpu: signal)"), setup

    samples = receiver.profile_samples()
    assert {"cpu", "wall"} <= {s.type for s in samples} <= {"cpu", "wall", "tasks"}
    assert {s.unit for s in samples} == {"nanoseconds"}
    assert all(s.resource["service.name"] == "ad" for s in samples)
    cpu = [s for s in samples if s.type == "cpu"]
    burning = sum(s.value for s in cpu if any(n == BURN and f == BURN_FILE for n, f, _ in s.frames))
    total = sum(s.value for s in cpu)
    print(f"burn: {burning / 1e6:.0f} ms of {total / 1e6:.0f} ms on the CPU ({burning / total:.0%})")
    assert burning > total / 2, "burn does not dominate the ad service's cpu profile"

    spans = {span.span_id: span for span in receiver.spans()}
    served = {span_id for span_id, span in spans.items() if span.name == "hipstershop.AdService/GetAds"}
    assert len(served) == CALLS, sorted(span.name for span in spans.values())
    linked = [s for s in samples if s.span_id]
    assert any(s.type == "cpu" and s.has(BURN) and s.span_id in served for s in linked)
    check_links(linked, spans)
    burner = [s for s in samples if s.thread == f"{AD_HIGH_CPU} burner"]
    assert burner and not any(s.span_id for s in burner), "the burner thread runs outside any span"


def check_links(linked: list[ProfileSample], spans: dict[bytes, object]) -> None:
    """Every linked sample: a span of this process, on the thread that ran it, within its start and end."""
    for sample in linked:
        span = spans.get(sample.span_id)
        assert span is not None, f"a sample linked to a span the process never sent: {sample.span_id.hex()}"
        assert sample.trace_id == span.trace_id  # type: ignore[attr-defined]
        # The service runs its handlers on its event loop, in the main thread.
        assert sample.thread == "MainThread", (sample.thread, span.name)  # type: ignore[attr-defined]
        start, end = span.start_time_unix_nano, span.end_time_unix_nano  # type: ignore[attr-defined]
        outside = [t for t in sample.timestamps if not start <= t <= end]
        assert not outside, f"samples of {span.name} taken outside it: {outside} not in [{start}, {end}]"  # type: ignore[attr-defined]


def stop(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    """SIGTERM the service; its JSON log lines (it must have exited 0)."""
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors[-3000:]
    return [json.loads(line) for line in errors.splitlines() if line.startswith("{")]


async def load_ads(seconds: float, callers: int) -> int:
    """Many short GetAds from `callers` concurrent callers for `seconds`; how many were answered."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{AD_PORT}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
        ads = demo_pb2_grpc.AdServiceStub(channel)
        until = asyncio.get_running_loop().time() + seconds

        async def caller() -> int:
            done = 0
            while asyncio.get_running_loop().time() < until:
                await ads.GetAds(pb.AdRequest(context_keys=["kitchen"]), timeout=10)
                done += 1
            return done

        return sum(await asyncio.gather(*(caller() for _ in range(callers))))


def main_thread_cpu(samples: list[ProfileSample]) -> tuple[float, list[tuple[str, float]]]:
    """Of the main thread's cpu samples: the share linked to a span, and every function's share of it
    (callees included, counted once per stack), most first."""
    cpu = main_cpu(samples)
    whole = sum(s.value for s in cpu) or 1
    linked = sum(s.value for s in cpu if s.span_id) / whole
    functions: dict[str, int] = {}
    for sample in cpu:
        for name in {name for name, _, _ in sample.frames}:
            functions[name] = functions.get(name, 0) + sample.value
    return linked, sorted(((name, value / whole) for name, value in functions.items()), key=lambda f: -f[1])


def main_cpu(samples: list[ProfileSample]) -> list[ProfileSample]:
    """The main thread's cpu samples (where the service runs its event loop)."""
    return [s for s in samples if s.type == "cpu" and s.thread == "MainThread"]


async def test_under_many_short_calls_the_main_threads_cpu_lands_in_the_calls_and_their_spans(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    flags = FlagFile(tmp_path / "flags.json")
    flags.seed()
    seen: dict[str, tuple[float, list[tuple[str, float]]]] = {}
    sent: list[ProfileSample] = []
    for source in ("thread", "signal"):  # before (the sampling thread alone) and after, side by side
        earlier = len(receiver.profiles())
        process = serve_ad(receiver, flags.path, BOUTIQUE_PROFILING_CPU=source)
        try:
            calls = await load_ads(LOAD_SECONDS, LOAD_CALLERS)
        finally:
            lines = await asyncio.to_thread(stop, process)  # its last window is sent as it stops
        setup = next(line for line in lines if line["event"] == "tracing")
        assert str(setup["profiling"]).endswith(f"(cpu: {source})"), setup
        sent = [s for request in receiver.profiles()[earlier:] for s in profile_samples(request)]
        seen[source] = linked, top = main_thread_cpu(sent)
        below_the_loop = [f"{name} {share:.0%}" for name, share in top if share < 0.8][:8]
        print(
            f"\nad under {calls / LOAD_SECONDS:.0f} GetAds/s, main thread's cpu by {source}: {linked:.0%} "
            f"linked to spans; select {dict(top).get('EpollSelector.select', 0):.0%}; "
            f"then: {', '.join(below_the_loop)}"
        )
    before, _ = seen["thread"]
    linked, top = seen["signal"]
    shares = dict(top)
    print(f"the main thread's cpu linked to spans: {before:.0%} before, {linked:.0%} with SIGPROF")
    assert shares.get("AdServicer.GetAds", 0) > shares.get("EpollSelector.select", 0), top[:20]
    below_the_loop = [name for name, share in top if share < 0.8]
    assert "AdServicer.GetAds" in below_the_loop[:10], top[:20]
    serving = [s for s in main_cpu(sent) if s.has("AdServicer.GetAds")]
    assert serving and all(s.span_id for s in serving), "every sample inside GetAds is inside its span"


async def list_products(callers: int, rounds: int) -> int:
    """`callers` concurrent callers of ListProducts, `rounds` calls each; how many were answered."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{CATALOG_PORT}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
        catalog = demo_pb2_grpc.ProductCatalogServiceStub(channel)

        async def caller() -> int:
            for _ in range(rounds):
                assert (await catalog.ListProducts(pb.Empty(), timeout=30)).products
            return rounds

        return sum(await asyncio.gather(*(caller() for _ in range(callers))))


async def test_calls_queued_behind_the_catalogs_lock_show_in_the_tasks_profile_in_their_spans(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    flags = FlagFile(tmp_path / "flags.json")
    flags.seed()
    flags.set(PRODUCT_CATALOG_DB_LOCK, "50ms", by="test")
    process = serve_ad(receiver, flags.path, "productcatalog")
    try:
        calls = await list_products(callers=8, rounds=6)  # each waits behind up to 7 queries of 50 ms
    finally:
        await asyncio.to_thread(stop, process)
    tasks = [s for s in receiver.profile_samples() if s.type == "tasks"]
    whole = sum(s.value for s in tasks)
    querying = [s for s in tasks if s.has("DatabaseLock.query")]
    share = sum(s.value for s in querying) / (whole or 1)
    wall = [s for s in receiver.profile_samples() if s.type == "wall"]
    on_a_thread = sum(s.value for s in wall if s.has("DatabaseLock.query")) / (
        sum(s.value for s in wall) or 1
    )
    print(
        f"\ncatalog, {calls} calls queued on its lock: DatabaseLock.query holds {share:.0%} of the tasks "
        f"profile (each call is two tasks, its handler's and gRPC's own), {on_a_thread:.1%} of the wall one"
    )
    assert share > 0.2 and {s.thread for s in querying} == {"MainThread"}
    spans = {span.span_id: span for span in receiver.spans()}
    waiting = [s for s in querying if [name for name, _, _ in s.frames[:2]] == ["Lock.acquire", ANTER]]
    querying_db = [s for s in querying if s.frames[0][0] == "sleep"]
    assert waiting and querying_db, {tuple(name for name, _, _ in s.frames[:3]) for s in querying}
    assert all(spans[s.span_id].name == "hipstershop.ProductCatalogService/ListProducts" for s in waiting)
    assert all(spans[s.span_id].name == "db.query" for s in querying_db)
    assert len({s.span_id for s in waiting}) > 1, "each queued call is sampled in its own span"
    check_links([s for s in tasks if s.span_id], spans)


ANTER = "_ContextManagerMixin.__aenter__"  # `async with lock` awaits Lock.acquire through it
