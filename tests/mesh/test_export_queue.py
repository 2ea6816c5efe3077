"""The sending queue keeps spans through a backend outage: real OTLP backends on loopback sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY, generate_latest

from boutique.mesh.export_queue import QueueSettings, SendingQueue, _Request
from boutique.mesh.otlp_send import GRPC_EXPORT_METHOD, OtlpTarget
from boutique.mesh.settings import MeshSettings
from boutique.run.ports import free_port

FAST = QueueSettings(schedule_delay=0.05, retry_initial=0.05, retry_max=0.2, shutdown_timeout=1.0)


class GrpcBackend:
    """An OTLP/gRPC trace receiver that records span names and can be told to refuse or go away."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.names: list[str] = []
        self.answer = grpc.StatusCode.OK
        self.calls = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def _export(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.calls += 1
            if self.answer is not grpc.StatusCode.OK:
                context.abort(self.answer, "told to refuse")
            request = ExportTraceServiceRequest.FromString(raw)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.names.extend(span.name for span in scope.spans)
        return ExportTraceServiceResponse().SerializeToString()

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(4))
        service, method = GRPC_EXPORT_METHOD.strip("/").split("/")
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {method: handler})])
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None


@pytest.fixture
def backend() -> Iterator[GrpcBackend]:
    found = GrpcBackend(free_port())
    yield found
    found.stop()


def grpc_queue(port: int, settings: QueueSettings = FAST, spool: Path | None = None) -> SendingQueue:
    target = OtlpTarget(protocol="grpc", endpoint=f"http://127.0.0.1:{port}", timeout=2.0)
    return SendingQueue(target.transport, settings, spool)


def emit(queue: SendingQueue, names: list[str]) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(queue)
    tracer = provider.get_tracer("test")
    for name in names:
        tracer.start_span(name).end()
    return provider


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_spans_made_while_the_backend_is_down_arrive_once_it_is_back(backend: GrpcBackend) -> None:
    queue = grpc_queue(backend.port)
    names = [f"span-{i}" for i in range(2000)]
    provider = emit(queue, names)  # nothing listens yet: connection refused
    wait_for(lambda: queue.counts.retries >= 3, "retries while the backend is away")
    assert backend.names == [] and queue.queued_spans == 2000
    backend.start()
    wait_for(lambda: len(backend.names) >= 2000, "delivery after the backend came back")
    assert backend.names == names  # in order, each once
    assert queue.counts.exported == 2000 and queue.counts.dropped_full == 0
    provider.shutdown()


def test_unavailable_is_retried_and_invalid_argument_is_dropped(backend: GrpcBackend) -> None:
    backend.start()
    backend.answer = grpc.StatusCode.UNAVAILABLE
    queue = grpc_queue(backend.port)
    provider = emit(queue, ["a", "b"])
    wait_for(lambda: backend.calls >= 3, "repeated tries while UNAVAILABLE")
    backend.answer = grpc.StatusCode.OK
    wait_for(lambda: backend.names == ["a", "b"], "delivery after UNAVAILABLE")
    backend.answer = grpc.StatusCode.INVALID_ARGUMENT
    calls = backend.calls
    tracer = provider.get_tracer("test")
    tracer.start_span("never").end()
    wait_for(lambda: queue.counts.dropped_rejected == 1, "a refused request dropped")
    time.sleep(0.5)
    assert backend.calls == calls + 1  # tried once, not again
    assert queue.queued_spans == 0
    provider.shutdown()


def test_a_full_queue_drops_the_oldest_spans_and_counts_them(backend: GrpcBackend) -> None:
    settings = QueueSettings(
        max_spans=1000, batch_spans=100, schedule_delay=0.05, retry_initial=0.05, retry_max=0.2
    )
    queue = grpc_queue(backend.port, settings)
    names = [f"span-{i}" for i in range(3000)]
    provider = emit(queue, names)
    wait_for(lambda: queue.counts.retries >= 1, "the backend found away")
    assert queue.queued_spans <= 1000
    backend.start()
    wait_for(lambda: queue.queued_spans == 0, "the queue drained")
    delivered = backend.names
    assert len(delivered) + queue.counts.dropped_full == 3000
    assert 900 <= len(delivered) <= 1000
    assert delivered == names[-len(delivered) :]  # the newest kept, in order
    metrics = generate_latest(REGISTRY).decode()
    assert 'boutique_telemetry_spans_dropped_total{reason="queue_full"}' in metrics
    provider.shutdown()


def test_spans_that_arrive_while_a_batch_is_encoded_keep_the_span_bound(backend: GrpcBackend) -> None:
    """A request enqueued after new spans filled the queue during its encoding goes: it is the oldest."""
    settings = QueueSettings(max_spans=100, batch_spans=1000, schedule_delay=60.0)  # the sender stays idle
    queue = grpc_queue(backend.port, settings)
    provider = emit(queue, [f"new-{i}" for i in range(98)])  # arrived while an older batch was encoded
    older = _Request(b"x" * 10, items=20)
    with queue._cond:  # the sender's step after encoding, made here at the moment that matters
        queue._enqueue(older)
    assert queue.queued_spans == 98, "the span bound was overrun"
    assert queue.counts.dropped_full == 20
    provider.shutdown()


def test_the_byte_bound_holds_too(backend: GrpcBackend) -> None:
    settings = QueueSettings(max_bytes=20_000, batch_spans=50, schedule_delay=0.05, retry_initial=0.05)
    queue = grpc_queue(backend.port, settings)
    provider = emit(queue, [f"span-{i:05d}-" + "x" * 100 for i in range(2000)])
    wait_for(lambda: queue.counts.retries >= 1 and queue.queued_bytes > 0, "requests queued")
    wait_for(lambda: queue.counts.dropped_full > 0, "the byte bound enforced")
    assert queue.queued_bytes <= 20_000 + 10_000  # at most one request above the bound
    provider.shutdown()


class _Http503Then200(BaseHTTPRequestHandler):
    refusals = 2
    bodies: list[bytes] = []
    retry_after = "0"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.refusals > 0:
            cls.refusals -= 1
            self.send_response(503)
            self.send_header("Retry-After", cls.retry_after)
            self.end_headers()
            return
        cls.bodies.append(body)
        self.send_response(200 if self.path == "/v1/traces" else 400)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: object) -> None:
        pass


def test_http_503_with_retry_after_is_retried_and_a_400_is_not() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http503Then200)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        target = OtlpTarget(protocol="http/protobuf", endpoint=f"http://127.0.0.1:{port}/v1/traces")
        queue = SendingQueue(target.transport, FAST)
        provider = emit(queue, ["one", "two"])
        wait_for(lambda: len(_Http503Then200.bodies) == 1, "delivery after two 503s")
        # The server keeps the body before it answers: the sender counts the export once the answer is in.
        wait_for(lambda: queue.counts.exported == 2, "the export counted")
        assert queue.counts.retries == 2
        wrong = OtlpTarget(protocol="http/protobuf", endpoint=f"http://127.0.0.1:{port}/wrong")
        refused = SendingQueue(wrong.transport, FAST)
        other = emit(refused, ["three"])
        wait_for(lambda: refused.counts.dropped_rejected == 1, "a 400 dropped")
        assert refused.counts.retries == 0
        provider.shutdown()
        other.shutdown()
    finally:
        server.shutdown()


def test_undelivered_spans_are_spooled_at_shutdown_and_sent_by_the_next_process(
    backend: GrpcBackend, tmp_path: Path
) -> None:
    spool = tmp_path / "spool" / "svc-0"
    queue = grpc_queue(backend.port, FAST, spool)
    provider = emit(queue, [f"span-{i}" for i in range(700)])
    wait_for(lambda: queue.counts.retries >= 1, "the backend found away")
    provider.shutdown()  # the backend is still away: the spans go to disk
    assert queue.counts.spooled == 700
    files = list(spool.glob("*.otlp"))  # one per queued request of at most 512 spans
    assert len(files) >= 2 and sum(int(f.stem.rsplit("-", 1)[1]) for f in files) == 700
    backend.start()
    successor = grpc_queue(backend.port, FAST, spool)
    wait_for(lambda: len(backend.names) == 700, "spooled spans delivered by the next process")
    wait_for(lambda: not list(spool.glob("*.otlp")), "the spool emptied")
    assert backend.names == [f"span-{i}" for i in range(700)]
    successor.shutdown()


def test_the_transport_is_built_only_when_spans_are_due(backend: GrpcBackend) -> None:
    built = []
    target = OtlpTarget(protocol="grpc", endpoint=f"127.0.0.1:{backend.port}")

    def build():  # type: ignore[no-untyped-def]
        built.append(1)
        return target.transport()

    backend.start()
    queue = SendingQueue(build, FAST)
    time.sleep(0.3)
    assert built == []
    provider = emit(queue, ["x"])
    wait_for(lambda: backend.names == ["x"], "the first span delivered")
    assert built == [1]
    provider.shutdown()


def test_bad_variables_fail_at_set_up() -> None:
    env = {"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}
    with pytest.raises(ValueError, match="gzip, none"):
        MeshSettings.from_env(env)
    env["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip"
    with pytest.raises(ValueError, match="BOUTIQUE_EXPORT_QUEUE_SPANS"):
        MeshSettings.from_env({**env, "BOUTIQUE_EXPORT_QUEUE_SPANS": "many"})
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318/"
    http = {**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert MeshSettings.from_env(http).tracing.target.endpoint == "http://collector:4318/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "https://tempo:4317"
    grpc_target = MeshSettings.from_env(env).tracing.target
    assert grpc_target.endpoint == "https://tempo:4317" and not grpc_target.insecure and grpc_target.gzip
