"""Tail sampling under kill -9: no acknowledged span is lost while its trace waits for a decision.

The observatory answers an export only once the spans are in its pending journal. These tests kill it
with SIGKILL while traces wait (and while senders are mid-request), start it again on the same data
directory, and check every acknowledged trace: stored whole when the policies keep it, absent when they
drop it (they are deterministic here, so the decision after the restart is the one before), never twice.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from boutique.observatory.sampling.policies import Probabilistic, trace_hashes
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.sampling_traffic import (
    Ids,
    SpanSpec,
    now_us,
    request,
    sampling,
    stored_spans,
    wait_decided,
)

PERCENT = 30
POLICIES = ("--sample-errors", "--sample-percent", str(PERCENT))


def expected_kept(trace_id: bytes, failed: bool) -> bool:
    """What the policies decide for a trace, before and after a restart alike."""
    hashed = trace_hashes([trace_id], Probabilistic("p", PERCENT, "").salt)[0]
    return failed or int(hashed) < 2**64 * PERCENT / 100


def check(
    client: httpx.Client, running: ObservatoryProcess, traces: dict[bytes, tuple[set[str], bool]]
) -> None:
    """Each trace stored whole exactly once if its policies keep it, else not at all."""
    kept = 0
    for trace_id, (span_ids, failed) in traces.items():
        found = [s["spanID"] for s in stored_spans(client, running.query_url, trace_id)]
        assert len(found) == len(set(found)), f"trace {trace_id.hex()} has spans stored twice"
        if expected_kept(trace_id, failed):
            kept += 1
            assert set(found) >= span_ids, f"trace {trace_id.hex()} lost acknowledged spans"
        else:
            assert found == [], f"trace {trace_id.hex()} was dropped before; decided alike after the restart"
    assert 0 < kept < len(traces)


def test_kill_9_during_the_decision_wait_loses_no_acknowledged_span(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_observatory(data, *POLICIES, "--sample-decision-wait", "10m")
    acknowledged: dict[bytes, tuple[set[str], bool]] = {}
    lock = threading.Lock()
    enough = threading.Event()

    def sender(seed: int) -> None:
        ids = Ids(seed)
        with httpx.Client(timeout=10) as client:
            while True:
                batch: list[SpanSpec] = []
                for _ in range(5):  # five traces of three spans over two services per request
                    trace, failed = ids.trace(), ids.rng.random() < 0.1
                    start = now_us()
                    batch += [
                        SpanSpec(
                            trace,
                            ids.span(),
                            ("web", "cart")[i % 2],
                            start_us=start + i,
                            error=failed and i == 2,
                        )
                        for i in range(3)
                    ]
                try:
                    answer = client.post(
                        f"http://127.0.0.1:{first.ports['otlp_http']}/v1/traces",
                        content=request(batch),
                        headers={"Content-Type": "application/x-protobuf"},
                    )
                except httpx.HTTPError:
                    return  # the observatory is gone: this request was never acknowledged
                if answer.status_code != 200:
                    return
                with lock:
                    for spec in batch:
                        span_ids, failed = acknowledged.setdefault(spec.trace_id, (set(), False))
                        span_ids.add(spec.span_id.hex())
                        acknowledged[spec.trace_id] = (span_ids, failed or spec.error)
                    if len(acknowledged) >= 400:
                        enough.set()

    threads = [threading.Thread(target=sender, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert enough.wait(60), "the senders did not get 400 traces acknowledged"
        with httpx.Client(timeout=10) as client:
            assert sampling(client, first.query_url)["traces"]["kept"] == 0  # everything still waits
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # with requests still in flight
        for thread in threads:
            thread.join(30)
    with lock:
        traces = dict(acknowledged)

    second = start_observatory(data, *POLICIES, "--sample-decision-wait", "1s")
    try:
        with httpx.Client(timeout=10) as client:
            figures = wait_decided(client, second.query_url, len(traces))
            check(client, second, traces)
    finally:
        second.stop()
    print(
        f"{len(traces)} traces acknowledged before kill -9; after the restart {figures['spans']['replayed']} spans"
        f" read back, {figures['traces']['kept']} traces kept, {figures['traces']['dropped']} dropped"
    )
    assert figures["spans"]["replayed"] >= sum(len(s) for s, _ in traces.values())


def sdk_traces(count: int, seed: int) -> tuple[list[ReadableSpan], dict[bytes, tuple[set[str], bool]]]:
    """`count` finished traces of two spans from the OpenTelemetry SDK, every seventh failing."""
    random.seed(seed)
    finished = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("crash-test")
    for number in range(count):
        with tracer.start_as_current_span("PlaceOrder") as root:
            with tracer.start_as_current_span("Charge"):
                pass
            if number % 7 == 0:
                root.set_status(Status(StatusCode.ERROR, "declined"))
    provider.shutdown()
    spans = list(finished.get_finished_spans())
    traces: dict[bytes, tuple[set[str], bool]] = {}
    for span in spans:
        trace_id = span.context.trace_id.to_bytes(16, "big")
        span_ids, failed = traces.setdefault(trace_id, (set(), False))
        span_ids.add(f"{span.context.span_id:016x}")
        traces[trace_id] = (span_ids, failed or span.status.status_code is StatusCode.ERROR)
    return spans, traces


def export(port: int, spans: Sequence[ReadableSpan], per_request: int) -> None:
    """Export over OTLP/gRPC with the SDK's exporter, each call answered SUCCESS (acknowledged)."""
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    try:
        for first in range(0, len(spans), per_request):
            assert exporter.export(spans[first : first + per_request]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_kill_9_between_decisions_stores_kept_spans_once_and_decides_the_rest_alike(tmp_path: Path) -> None:
    data = tmp_path / "data"
    spans, traces = sdk_traces(60, seed=5)
    # The oldest traces beyond 20 are decided at once (kept ones stored), the newest 20 wait: the journal
    # holds both when the process dies.
    first = start_observatory(
        data, *POLICIES, "--sample-decision-wait", "10m", "--tail-sampling", str(config(tmp_path))
    )
    try:
        export(first.ports["otlp_grpc"], spans, per_request=20)
        with httpx.Client(timeout=10) as client:
            figures = wait_early(client, first, 40)
            stored_before = figures["spans"]["stored"]
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert stored_before > 0

    second = start_observatory(data, *POLICIES, "--sample-decision-wait", "1s")
    try:
        with httpx.Client(timeout=10) as client:
            after = wait_decided(client, second.query_url, 1)
            check(client, second, traces)
    finally:
        second.stop()
    print(f"{stored_before} spans stored before kill -9; after the restart: {after['spans']}")
    assert after["spans"]["replayed"] > 0


def config(folder: Path) -> Path:
    """A config file holding only the memory bound (the flags give the policies)."""
    path = folder / "bound.yaml"
    path.write_text(
        "num_traces: 20\npolicies: [{name: none, type: span_count, span_count: {min_spans: 1000}}]\n"
    )
    return path


def wait_early(client: httpx.Client, running: ObservatoryProcess, traces: int) -> dict[str, object]:
    """Poll until `traces` were decided early and their kept spans stored."""
    deadline = time.monotonic() + 60
    while True:
        figures = sampling(client, running.query_url)
        decided = figures["traces"]["kept"] + figures["traces"]["dropped"]
        if decided >= traces and figures["spans"]["stored"] >= figures["spans"]["kept"]:
            return figures
        assert time.monotonic() < deadline, figures
        time.sleep(0.1)


def test_with_sampling_turned_off_a_crashed_journal_is_stored_whole(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = Ids(77)
    sent = [SpanSpec(ids.trace(), ids.span(), "web", start_us=now_us() + i) for i in range(50)]
    first = start_observatory(data, *POLICIES, "--sample-decision-wait", "10m")
    try:
        with httpx.Client(timeout=10) as client:
            for part in range(0, 50, 10):
                answer = client.post(
                    f"http://127.0.0.1:{first.ports['otlp_http']}/v1/traces",
                    content=request(sent[part : part + 10]),
                    headers={"Content-Type": "application/x-protobuf"},
                )
                assert answer.status_code == 200
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert list((data / "observatory.duckdb.sampling").iterdir())

    second = start_observatory(data)  # no sampling: what the journal holds is stored as it is
    try:
        with httpx.Client(timeout=10) as client:
            for spec in sent:
                assert [s["spanID"] for s in stored_spans(client, second.query_url, spec.trace_id)] == [
                    spec.span_id.hex()
                ]
    finally:
        second.stop()
    assert not list((data / "observatory.duckdb.sampling").iterdir())
