"""Overload: a full queue refuses at once (429 / RESOURCE_EXHAUSTED) and the SDK exporter's retry succeeds."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import grpc
import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from boutique.observatory.config import ObservatoryConfig, Ports
from boutique.observatory.model import SpanBatch
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.server import Observatory


def request_bytes(spans: int, service: str = "burst") -> bytes:
    """A serialized ExportTraceServiceRequest of `spans` root spans."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = service
    scope = resource.scope_spans.add()
    now = time.time_ns()
    for _ in range(spans):
        scope.spans.add(
            trace_id=os.urandom(16), span_id=os.urandom(8), name="op", start_time_unix_nano=now,
            end_time_unix_nano=now + 1000,
        )  # fmt: skip
    return request.SerializeToString()


def batch_of(spans: int) -> SpanBatch:
    return decode(request_bytes(spans))


async def test_a_full_queue_refuses_at_once_and_the_sdk_exporter_retry_then_succeeds(tmp_path: Path) -> None:
    observatory = Observatory(ObservatoryConfig(ports=Ports(0, 0, 0, 0), data_dir=tmp_path, queue_spans=10))
    gate = threading.Event()
    append = observatory.store.append

    def held_append(batch: SpanBatch) -> None:
        gate.wait(30)
        append(batch)

    observatory.store.append = held_append  # type: ignore[method-assign]
    bound = await observatory.start()
    try:
        held = observatory.pipeline.offer(batch_of(10))  # the writer holds these: the queue is full
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(20):  # a burst: every request is refused at once, nothing piles up
                refused = await client.post(
                    f"http://127.0.0.1:{bound.otlp_http}/v1/traces",
                    content=request_bytes(5),
                    headers={"Content-Type": "application/x-protobuf"},
                )
                assert refused.status_code == 429
                assert int(refused.headers["retry-after"]) >= 1
        assert observatory.pipeline.queued_spans == 10

        async with grpc.aio.insecure_channel(f"127.0.0.1:{bound.otlp_grpc}") as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            try:
                await export(request_bytes(5), timeout=5)
                raise AssertionError("a full queue must refuse gRPC exports too")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

        kept = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "patient"}))
        provider.add_span_processor(SimpleSpanProcessor(kept))
        with provider.get_tracer("t").start_as_current_span("retried"):
            pass
        spans = kept.get_finished_spans()
        exporter = HttpExporter(endpoint=f"http://127.0.0.1:{bound.otlp_http}/v1/traces", timeout=30)
        refused_before = observatory.pipeline.refused
        result = asyncio.create_task(asyncio.to_thread(exporter.export, spans))
        while observatory.pipeline.refused == refused_before:  # noqa: ASYNC110 - refused at least once
            await asyncio.sleep(0.05)
        assert not result.done()
        gate.set()  # the store catches up; the exporter's next attempt is taken
        assert await result is SpanExportResult.SUCCESS
        assert await asyncio.wrap_future(held) == 10
        trace_id = spans[0].context.trace_id.to_bytes(16, "big")
        stored = await asyncio.to_thread(observatory.store.traces, [trace_id])
        assert [s.operation for s in stored[0]] == ["retried"]
    finally:
        gate.set()
        await observatory.stop()
