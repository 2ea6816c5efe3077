"""A real observatory whose data directory fills up: a size-limited tmpfs, real OTLP over HTTP and gRPC.

While the disk is full the observatory must refuse exports as retryable (503 + Retry-After,
UNAVAILABLE + RetryInfo), keep answering queries from what it stored, and say so on /_healthz and
/_readyz; once space comes back it must take spans again by itself, and every span it acknowledged
must be there at the end. The store's checkpoint threshold is lowered so that the disk fills across a
checkpoint, the case in which DuckDB invalidates the database and only a reopen brings it back, and
then between checkpoints, where a write to the log fails first. `boutique up`'s supervisor must show
the observatory DEGRADED meanwhile, and SERVING again without restarting it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from boutique.observatory.server import CHECKPOINT_VARIABLE
from boutique.run.plan import ProcessPlan
from boutique.run.ports import free_port
from boutique.run.status import event_line
from boutique.run.supervisor import Child, Supervisor
from tests.observatory.process import ObservatoryProcess, start_observatory

THRESHOLD = 4 << 20  # the store checkpoints once its write-ahead log passes this
SPANS_PER_TRACE = 20
PAYLOAD_BYTES = 256  # random, so that nothing compresses the disk's filling away
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SENDERS = ("http", "http", "grpc", "grpc")  # the transport of each sending thread
MAX_REQUESTS = 20_000  # per fill, across the senders: the disk is full long before
RECOVERY_BOUND = 60.0  # seconds: "eventually", not a timing target
SERVICE = "disk-filler"


@pytest.fixture
def observatory(small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObservatoryProcess]:
    monkeypatch.setenv(CHECKPOINT_VARIABLE, f"{THRESHOLD >> 20}MB")
    running = start_observatory(small_disk / "data")
    yield running
    running.stop()
    print(running.text()[-4000:] if running.process.returncode else "", end="")


def export_request(trace_id: bytes) -> bytes:
    """One trace of SPANS_PER_TRACE spans, each with a random payload attribute, as OTLP protobuf."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = SERVICE
    scope = resource.scope_spans.add()
    now = time.time_ns()
    for index in range(SPANS_PER_TRACE):
        span = scope.spans.add(
            trace_id=trace_id,
            span_id=os.urandom(8),
            name=f"fill-{index % 4}",
            kind=2,
            start_time_unix_nano=now + index * 1000,
            end_time_unix_nano=now + index * 1000 + 500_000,
        )
        span.attributes.add(key="payload").value.string_value = os.urandom(PAYLOAD_BYTES // 2).hex()
    return request.SerializeToString()


@dataclass
class Ledger:
    """What the senders saw: trace ids acknowledged with success, and the refusals."""

    acked: set[str] = field(default_factory=set)
    refusals: dict[str, list[tuple[str, int, str]]] = field(default_factory=lambda: {"http": [], "grpc": []})
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sender:
    """Real OTLP exporters' wire calls: protobuf over HTTP and over gRPC, answered per request."""

    def __init__(self, otlp_http: int, otlp_grpc: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{otlp_http}", timeout=30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{otlp_grpc}")
        self.export = self.channel.unary_unary(EXPORT)

    def close(self) -> None:
        self.http.close()
        self.channel.close()

    def send(self, transport: str, ledger: Ledger) -> bool:
        """Export one new trace; True when acknowledged (recorded in the ledger), False when refused."""
        trace_id = os.urandom(16)
        body = export_request(trace_id)
        if transport == "http":
            response = self.http.post(
                "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
            )
            if response.status_code == 200:
                with ledger.lock:
                    ledger.acked.add(trace_id.hex())
                return True
            assert response.status_code == 503, (response.status_code, response.text)
            assert int(response.headers["Retry-After"]) > 0
            status = Status.FromString(response.content)
            assert status.code == 14  # UNAVAILABLE, as OTLP/HTTP wants it in the body
            with ledger.lock:
                ledger.refusals["http"].append(("503", int(response.headers["Retry-After"]), status.message))
            return False
        try:
            self.export(body, timeout=30)
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, (refused.code(), refused.details())
            trailers = dict(refused.trailing_metadata() or ())
            delay = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds
            assert delay > 0
            with ledger.lock:
                ledger.refusals["grpc"].append(("UNAVAILABLE", delay, refused.details() or ""))
            return False
        with ledger.lock:
            ledger.acked.add(trace_id.hex())
        return True


def fill_until_refused(sender: Sender, ledger: Ledger, query_url: str) -> int:
    """Send from four threads (two per transport) until each sender has been refused once, while a fifth
    searches the whole time (no query may fail as the store turns read-only); requests sent."""
    sent = [0]
    count = threading.Lock()
    filling = threading.Event()
    answers: list[int] = []

    def search() -> None:
        with httpx.Client(base_url=query_url, timeout=30) as client:
            while filling.is_set():
                found = client.get("/api/traces", params={"service": SERVICE, "limit": 5})
                answers.append(found.status_code)

    def run(transport: str) -> None:
        while True:
            with count:
                if sent[0] >= MAX_REQUESTS:
                    return
                sent[0] += 1
            if not sender.send(transport, ledger):
                return

    filling.set()
    with ThreadPoolExecutor(len(SENDERS) + 1) as pool:
        searching = pool.submit(search)
        try:
            for result in [pool.submit(run, transport) for transport in SENDERS]:
                result.result()
        finally:
            filling.clear()
        searching.result()
    assert answers and set(answers) == {200}, f"searches during the fill answered {sorted(set(answers))}"
    print(f"  {len(answers)} searches during the fill, all answered 200")
    return sent[0]


def fill_disk(disk: Path, data: Path, across_checkpoint: bool) -> Path:
    """Take the disk's free space down with a filler file; its path.

    Across a checkpoint: the write-ahead log still reaches the checkpoint threshold, but the checkpoint
    then runs out of space (DuckDB invalidates the database); the span bodies written to segment files
    meanwhile (as many bytes per byte of log as so far: no checkpoint has run yet) get room of their own.
    Otherwise a log or segment write runs out first.
    """
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    wal = data / "observatory.duckdb.wal"
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    leave = THRESHOLD // 8
    if across_checkpoint:
        bodies = sum(f.stat().st_size for f in (data / "observatory.duckdb.segments").glob("*.seg"))
        to_checkpoint = max(0, THRESHOLD - wal_bytes)
        leave = to_checkpoint + THRESHOLD // 2 + to_checkpoint * bodies // max(1, wal_bytes)
    with filler.open("wb") as out:
        os.posix_fallocate(out.fileno(), 0, max(1, free - leave))
    print(f"filled the disk: {leave / 2**20:.1f} MiB left, write-ahead log {wal_bytes / 2**20:.1f} MiB")
    return filler


def get_json(url: str) -> tuple[int, dict]:
    response = httpx.get(url, timeout=30)
    return response.status_code, response.json()


def http_ports(observatory: ObservatoryProcess) -> list[int]:
    return [observatory.ports[name] for name in ("otlp_http", "zipkin", "query")]


def assert_degraded(observatory: ObservatoryProcess) -> dict:
    """/_healthz and /_readyz on every HTTP port, and /api/status, say the store is read-only; the health."""
    health: dict = {}
    for port in http_ports(observatory):
        code, health = get_json(f"http://127.0.0.1:{port}/_healthz")
        assert code == 503 and health["status"] == "DEGRADED", (port, code, health)
        assert health["store"].startswith("read-only"), health
        response = httpx.get(f"http://127.0.0.1:{port}/_readyz", timeout=30)
        assert response.status_code == 503 and response.json()["status"] == "DEGRADED"
        assert int(response.headers["Retry-After"]) > 0
    code, status = get_json(f"{observatory.query_url}/api/status")
    assert code == 200 and status["health"]["status"] == "DEGRADED" and status["failed_spans"] > 0
    return health


def assert_serving(observatory: ObservatoryProcess) -> None:
    for port in http_ports(observatory):
        for path in ("/_healthz", "/_readyz"):
            code, body = get_json(f"http://127.0.0.1:{port}{path}")
            assert (code, body["status"], body["store"]) == (200, "SERVING", "writable"), (port, path, body)


def assert_stored(observatory: ObservatoryProcess, trace_ids: set[str]) -> None:
    """Every acknowledged trace is found by its id with all its spans (Zipkin's traceMany, a hundred ids a
    request; Jaeger's trace by id for some of them)."""
    ordered = sorted(trace_ids)
    spans: dict[str, set[str]] = {}
    with httpx.Client(base_url=observatory.query_url, timeout=30) as client:
        for start in range(0, len(ordered), 100):
            response = client.get(
                "/api/v2/traceMany", params={"traceIds": ",".join(ordered[start : start + 100])}
            )
            assert response.status_code == 200, response.text
            for trace in response.json():
                for span in trace:
                    spans.setdefault(span["traceId"], set()).add(span["id"])
        for trace_id in ordered[:: max(1, len(ordered) // 10)]:
            response = client.get(f"/api/traces/{trace_id}")
            assert response.status_code == 200 and len(response.json()["data"][0]["spans"]) == SPANS_PER_TRACE
    missing = [t for t in ordered if len(spans.get(t, ())) != SPANS_PER_TRACE]
    assert not missing, f"{len(missing)} of {len(ordered)} acknowledged traces are not stored: {missing[:5]}"


def wait_until_ready(observatory: ObservatoryProcess) -> float:
    """Poll /_readyz until it answers 200; the seconds it took (fails after RECOVERY_BOUND)."""
    began = time.monotonic()
    ready = f"http://127.0.0.1:{observatory.ports['otlp_http']}/_readyz"
    while time.monotonic() - began < RECOVERY_BOUND:
        assert observatory.process.poll() is None, f"the observatory exited:\n{observatory.text()[-3000:]}"
        if httpx.get(ready, timeout=30).status_code == 200:
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(
        f"not ready {RECOVERY_BOUND:.0f}s after space came back: {observatory.text()[-3000:]}"
    )


def test_a_full_disk_turns_the_observatory_read_only_until_space_comes_back(
    observatory: ObservatoryProcess, small_disk: Path
) -> None:
    ledger = Ledger()
    sender = Sender(observatory.ports["otlp_http"], observatory.ports["otlp_grpc"])
    try:
        for transport in SENDERS * 5:
            assert sender.send(transport, ledger)
        for across_checkpoint in (True, False):
            health = fill_and_recover(observatory, small_disk, sender, ledger, across_checkpoint)
            if across_checkpoint:
                assert health["reopens"] >= 1 and "checkpoint" in health["error"], (
                    f"the fill across a checkpoint did not make DuckDB invalidate the database: {health}"
                )
        assert_stored(observatory, ledger.acked)
        print(
            f"all {len(ledger.acked)} acknowledged traces ({len(ledger.acked) * SPANS_PER_TRACE} spans) stored"
        )
        assert observatory.process.poll() is None  # recovered in place, twice, without a restart
    finally:
        sender.close()


def fill_and_recover(
    observatory: ObservatoryProcess, disk: Path, sender: Sender, ledger: Ledger, across_checkpoint: bool
) -> dict:
    """Fill the disk until exports are refused, check the read-only behaviour, free the space, wait for
    recovery; the health answered while the disk was full."""
    filler = fill_disk(disk, disk / "data", across_checkpoint)
    before = len(ledger.acked)
    refused = {transport: len(found) for transport, found in ledger.refusals.items()}
    sent = fill_until_refused(sender, ledger, observatory.query_url)
    assert all(len(ledger.refusals[t]) > refused[t] for t in refused), "the disk never filled"
    kind = "across a checkpoint" if across_checkpoint else "between checkpoints"
    print(f"fill {kind}: {sent} requests, {len(ledger.acked) - before} acknowledged, then refused:")
    print(f"  OTLP/HTTP {ledger.refusals['http'][-1]}")
    print(f"  OTLP/gRPC {ledger.refusals['grpc'][-1]}")

    health = assert_degraded(observatory)
    print(f"  health: {health['store']}; reopens {health['reopens']}; waiting: {health['waiting']}")
    print(f"  DuckDB said: {health['error']}")
    zipkin = httpx.post(
        f"http://127.0.0.1:{observatory.ports['zipkin']}/api/v2/spans",
        json=[{"traceId": "ab" * 16, "id": "cd" * 8, "name": "z", "timestamp": 1, "duration": 1}],
        timeout=30,
    )
    assert zipkin.status_code == 503 and int(zipkin.headers["Retry-After"]) > 0
    for transport in ("http", "grpc"):  # still refused, never acknowledged
        assert not sender.send(transport, ledger)
    with httpx.Client(base_url=observatory.query_url, timeout=30) as client:
        assert SERVICE in client.get("/api/services").json()["data"]
        found = client.get("/api/traces", params={"service": SERVICE, "limit": 20})
        assert found.status_code == 200 and len(found.json()["data"]) == 20
    assert_stored(observatory, ledger.acked)  # queries answer from what is stored

    filler.unlink()
    took = wait_until_ready(observatory)
    print(f"  took spans again {took:.2f}s after the filler was deleted")
    assert_serving(observatory)
    for transport in SENDERS:
        assert sender.send(transport, ledger)
    return health


async def wait_for_state(child: Child, wanted: Callable[[str], bool], bound: float = RECOVERY_BOUND) -> float:
    """Wait until the supervisor's state of the child satisfies `wanted`; the seconds it took."""
    began = time.monotonic()
    while not wanted(child.state):
        assert time.monotonic() - began < bound, f"state stayed {child.state!r}"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def test_up_shows_the_observatory_degraded_while_its_disk_is_full(small_disk: Path) -> None:
    grpc_port, http_port, zipkin_port, query_port = (free_port() for _ in range(4))
    plan = ProcessPlan(
        "observatory",
        0,
        "observatory",
        query_port,
        env={CHECKPOINT_VARIABLE: f"{THRESHOLD >> 20}MB"},
        data_dir=str(small_disk / "data"),
        extra_ports=(grpc_port, http_port, zipkin_port),
    )
    supervisor = Supervisor([plan], small_disk.parent / "logs")
    child = supervisor.children[0]
    sender = Sender(http_port, grpc_port)
    ledger = Ledger()
    try:
        await supervisor.start()
        assert await supervisor.wait_ready(60.0), child.state
        pid = child.pid
        filler = fill_disk(small_disk, small_disk / "data", across_checkpoint=True)
        await asyncio.to_thread(fill_until_refused, sender, ledger, f"http://127.0.0.1:{query_port}")
        await wait_for_state(child, lambda state: state.startswith("DEGRADED"))
        print(f"while full: {event_line(child)}")
        assert child.state == "DEGRADED (read-only: disk full)" and not child.ready
        filler.unlink()
        took = await wait_for_state(child, lambda state: state == "SERVING")
        print(f"after {took:.2f}s: {event_line(child)}")
        assert (child.pid, child.restarts) == (pid, 0)  # recovered in place
        assert await asyncio.to_thread(sender.send, "grpc", ledger)
    finally:
        sender.close()
        await supervisor.stop()
