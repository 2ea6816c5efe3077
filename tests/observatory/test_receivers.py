"""The receivers end to end: OTLP/HTTP, OTLP/gRPC and Zipkin into a real DuckDB store through a pipeline."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette

from boutique.observatory.model import STATUS_ERROR, STATUS_OK, STATUS_UNSET, Event, Link, SpanBatch
from boutique.observatory.otlp.values import to_key_values
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.receivers import RECEIVERS, HttpReceiver, Limits, otlp_grpc, otlp_proto
from boutique.observatory.receivers.base import make_grpc_server
from boutique.observatory.store.duckdb_store import DuckDBStore

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json; charset=utf-8"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
ROOT = bytes.fromhex("eee19b7ec3c1b174")
CHILD = bytes.fromhex("eee19b7ec3c1b175")
OTHER_TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
OTHER_SPAN = bytes.fromhex("b7ad6b7169203331")
T0_US = time.time_ns() // 1000  # recent, so the store's age retention keeps it
T0 = T0_US * 1000


# ---- data ------------------------------------------------------------------------------------


def _span(trace_id: bytes, span_id: bytes, **fields: Any) -> Span:
    return Span(trace_id=trace_id, span_id=span_id, **fields)


def sample_request(trace_id: bytes = TRACE, extra: list[Span] | None = None) -> ExportTraceServiceRequest:
    """A checkout server span with a client child (attributes, events, links, status, trace state)."""
    root = _span(
        trace_id,
        ROOT,
        name="POST /checkout",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 5_000_000,
        attributes=to_key_values(
            {"http.method": "POST", "http.status_code": 200, "ratio": 0.5, "retry": True, "tags": ["a", "b"]}
        ),
        status=Status(code=Status.STATUS_CODE_OK),
    )
    child = _span(
        trace_id,
        CHILD,
        parent_span_id=ROOT,
        name="charge",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=T0 + 1_000_000,
        end_time_unix_nano=T0 + 3_000_000,
        trace_state="vendor=1",
        attributes=to_key_values({"peer.service": "payment"}),
        events=[
            Span.Event(time_unix_nano=T0 + 2_000_000, name="retry", attributes=to_key_values({"attempt": 2}))
        ],
        links=[
            Span.Link(
                trace_id=OTHER_TRACE, span_id=OTHER_SPAN, attributes=to_key_values({"link.kind": "batch"})
            )
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message="card declined"),
    )
    resource = Resource(
        attributes=to_key_values(
            {"service.name": "checkout", "service.instance.id": "checkout-1", "host.name": "box"}
        )
    )
    scope = InstrumentationScope(name="shop.checkout", version="1.2")
    spans = [root, child, *(extra or [])]
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])]
    )


def sample_json(trace_id: bytes = TRACE) -> dict[str, Any]:
    """The same trace as `sample_request`, in OTLP/JSON with the spellings senders use."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "checkout"}},
                        {"key": "service.instance.id", "value": {"stringValue": "checkout-1"}},
                        {"key": "host.name", "value": {"stringValue": "box"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "shop.checkout", "version": "1.2"},
                        "spans": [
                            {
                                "traceId": trace_id.hex(),
                                "spanId": ROOT.hex(),
                                "parentSpanId": "",
                                "name": "POST /checkout",
                                "kind": 2,
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": T0 + 5_000_000,
                                "attributes": [
                                    {"key": "http.method", "value": {"stringValue": "POST"}},
                                    {"key": "http.status_code", "value": {"intValue": "200"}},
                                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                                    {"key": "retry", "value": {"boolValue": True}},
                                    {
                                        "key": "tags",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"stringValue": "b"}]
                                            }
                                        },
                                    },
                                ],
                                "status": {"code": 1},
                                "someFutureField": {"ignored": True},
                            },
                            {
                                "trace_id": trace_id.hex().upper(),
                                "span_id": CHILD.hex(),
                                "parent_span_id": ROOT.hex(),
                                "name": "charge",
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": T0 + 1_000_000,
                                "endTimeUnixNano": str(T0 + 3_000_000),
                                "traceState": "vendor=1",
                                "attributes": [{"key": "peer.service", "value": {"stringValue": "payment"}}],
                                "events": [
                                    {
                                        "timeUnixNano": str(T0 + 2_000_000),
                                        "name": "retry",
                                        "attributes": [{"key": "attempt", "value": {"intValue": 2}}],
                                    }
                                ],
                                "links": [
                                    {
                                        "traceId": OTHER_TRACE.hex(),
                                        "spanId": OTHER_SPAN.hex(),
                                        "attributes": [
                                            {"key": "link.kind", "value": {"stringValue": "batch"}}
                                        ],
                                    }
                                ],
                                "status": {"code": "STATUS_CODE_ERROR", "message": "card declined"},
                            },
                        ],
                    }
                ],
            }
        ]
    }


def assert_sample_stored(store: DuckDBStore, trace_id: bytes = TRACE) -> None:
    """The sample trace is stored with ids, parentage, timing, attributes, events, links and status."""
    [spans] = store.traces([trace_id])
    by_name = {span.operation: span for span in spans}
    assert sorted(by_name) == ["POST /checkout", "charge"]
    root, child = by_name["POST /checkout"], by_name["charge"]
    assert (root.trace_id, root.span_id, root.parent_id) == (trace_id.hex(), ROOT.hex(), "")
    assert (child.trace_id, child.span_id, child.parent_id) == (trace_id.hex(), CHILD.hex(), ROOT.hex())
    assert (root.service, root.instance, root.kind_name, child.kind_name) == (
        "checkout",
        "checkout-1",
        "server",
        "client",
    )
    assert (root.start_us, root.duration_us) == (T0_US, 5000)
    assert (child.start_us, child.duration_us) == (T0_US + 1000, 2000)
    assert root.attributes == {
        "http.method": "POST",
        "http.status_code": 200,
        "ratio": 0.5,
        "retry": True,
        "tags": ["a", "b"],
    }
    assert root.resource == {
        "service.name": "checkout",
        "service.instance.id": "checkout-1",
        "host.name": "box",
    }
    assert (root.scope_name, root.scope_version) == ("shop.checkout", "1.2")
    assert (root.status, child.status, child.status_message) == (STATUS_OK, STATUS_ERROR, "card declined")
    assert child.attributes == {"peer.service": "payment"}
    assert child.events == [Event(T0_US + 2000, "retry", {"attempt": 2})]
    assert child.links == [Link(OTHER_TRACE.hex(), OTHER_SPAN.hex(), {"link.kind": "batch"})]
    assert child.trace_state == "vendor=1"


def gzip_bomb(inflated_bytes: int) -> bytes:
    """Zeros gzipped, built a MiB at a time (the inflated form is never in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(inflated_bytes >> 20)]
    parts.append(packer.flush())
    return b"".join(parts)


def one_span_batch(trace_id: bytes) -> SpanBatch:
    """A decoded one-span batch (to occupy the queue)."""
    span = _span(trace_id, ROOT, name="filler", start_time_unix_nano=T0, end_time_unix_nano=T0 + 1000)
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return otlp_proto.decode(request.SerializeToString())


# ---- fixtures and harness ------------------------------------------------------------------


class ControlledStore:
    """A DuckDB store whose appends can be held (until released) or made to fail."""

    def __init__(self, inner: DuckDBStore) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.release.set()
        self.failing = False

    def append(self, batch: SpanBatch) -> None:
        """Wait while held, fail while failing, else append to the real store."""
        self.release.wait(60)
        if self.failing:
            raise RuntimeError("disk full")
        self.inner.append(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "observatory.duckdb")
    yield opened
    opened.close()


@pytest.fixture
def controlled(store: DuckDBStore) -> Iterator[ControlledStore]:
    wrapper = ControlledStore(store)
    yield wrapper
    wrapper.failing = False
    wrapper.release.set()


@pytest.fixture
def pipeline(controlled: ControlledStore) -> Iterator[Pipeline]:
    """A started pipeline with a small queue (one span fills it) in front of the controlled store."""
    started = Pipeline(controlled, capacity_spans=1)  # type: ignore[arg-type]
    started.start()
    yield started
    started.stop()


def http_client(pipeline: Pipeline, limits: Limits | None = None) -> httpx.AsyncClient:
    limits = limits or Limits()
    routes = [r for rc in RECEIVERS if isinstance(rc, HttpReceiver) for r in rc.routes(pipeline, limits)]
    app = Starlette(routes=routes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://observatory")


@pytest.fixture
async def client(pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(pipeline) as opened:
        yield opened


@asynccontextmanager
async def grpc_channel(
    pipeline: Pipeline, max_message_bytes: int = 4 << 20
) -> AsyncIterator[grpc.aio.Channel]:
    """A real gRPC server on a loopback port with the trace service, and a channel to it."""
    server = make_grpc_server(max_message_bytes)
    server.add_generic_rpc_handlers((otlp_grpc.RECEIVER.handler(pipeline),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)


async def grpc_export(channel: grpc.aio.Channel, payload: bytes) -> ExportTraceServiceResponse:
    call = channel.unary_unary(EXPORT)  # raw bytes both ways
    return ExportTraceServiceResponse.FromString(await call(payload, timeout=10))


async def assert_still_serves(client: httpx.AsyncClient, store: DuckDBStore) -> None:
    """A valid request after a bad one is answered 200 and stored."""
    trace_id = os.urandom(16)
    response = await client.post(
        "/v1/traces", content=sample_request(trace_id).SerializeToString(), headers=PROTOBUF
    )
    assert response.status_code == 200, response.text
    assert_sample_stored(store, trace_id)


def rpc_status(response: httpx.Response) -> RpcStatus:
    assert response.headers["content-type"] == "application/x-protobuf"
    return RpcStatus.FromString(response.content)


# ---- OTLP/HTTP -------------------------------------------------------------------------------


async def test_protobuf_body_is_stored_intact(client: httpx.AsyncClient, store: DuckDBStore) -> None:
    response = await client.post("/v1/traces", content=sample_request().SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    assert_sample_stored(store)


async def test_json_body_is_stored_like_the_protobuf_one(
    client: httpx.AsyncClient, store: DuckDBStore
) -> None:
    response = await client.post("/v1/traces", content=json.dumps(sample_json()), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert_sample_stored(store)


async def test_gzipped_bodies_are_inflated(client: httpx.AsyncClient, store: DuckDBStore) -> None:
    gzipped = {"Content-Encoding": "gzip"}
    other = os.urandom(16)
    response = await client.post(
        "/v1/traces", content=gzip.compress(sample_request().SerializeToString()), headers=PROTOBUF | gzipped
    )
    assert response.status_code == 200
    response = await client.post(
        "/v1/traces", content=gzip.compress(json.dumps(sample_json(other)).encode()), headers=JSON | gzipped
    )
    assert response.status_code == 200, response.text
    assert_sample_stored(store)
    assert_sample_stored(store, other)


async def test_spans_with_bad_ids_are_a_partial_success(
    client: httpx.AsyncClient, store: DuckDBStore
) -> None:
    short = _span(TRACE, b"\x01\x02\x03\x04", name="short id", start_time_unix_nano=T0, end_time_unix_nano=T0)
    zero = _span(bytes(16), OTHER_SPAN, name="zero trace", start_time_unix_nano=T0, end_time_unix_nano=T0)
    body = sample_request(extra=[short, zero]).SerializeToString()
    response = await client.post("/v1/traces", content=body, headers=PROTOBUF)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 2
    assert "span_id" in partial.error_message
    assert_sample_stored(store)  # the valid spans were kept

    document = sample_json(OTHER_TRACE)
    document["resourceSpans"][0]["scopeSpans"][0]["spans"].append(
        {"traceId": OTHER_TRACE.hex(), "spanId": "0102"}
    )
    response = await client.post("/v1/traces", content=json.dumps(document), headers=JSON)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert_sample_stored(store, OTHER_TRACE)


async def test_malformed_protobuf_is_400_with_a_status(client: httpx.AsyncClient, store: DuckDBStore) -> None:
    response = await client.post("/v1/traces", content=b"\x0a\xff\xff\xff\xff\x0f garbage", headers=PROTOBUF)
    assert response.status_code == 400
    status = rpc_status(response)
    assert status.code == 3
    assert "ExportTraceServiceRequest" in status.message
    await assert_still_serves(client, store)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"resourceSpans": {"a": 1}}', "JSON array"),
        (json.dumps(sample_json()).replace(TRACE.hex(), "zz" * 16, 1).encode(), "not hex"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            "startTimeUnixNano",
        ),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
    ],
)
async def test_malformed_json_is_400_with_a_json_status(
    client: httpx.AsyncClient, store: DuckDBStore, body: bytes, reason: str
) -> None:
    response = await client.post("/v1/traces", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["code"] == 3
    assert reason in response.json()["message"]
    await assert_still_serves(client, store)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
        {"Content-Type": "application/x-protobuf", "Content-Encoding": "br"},
    ],
)
async def test_unsupported_media_is_415(
    client: httpx.AsyncClient, store: DuckDBStore, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/traces", content=sample_request().SerializeToString(), headers=headers)
    assert response.status_code == 415
    assert store.traces([TRACE]) == []
    await assert_still_serves(client, store)


async def test_gzip_bomb_is_refused_without_inflating_it(pipeline: Pipeline, store: DuckDBStore) -> None:
    bomb = gzip_bomb(64 << 20)
    limit = 1 << 20
    assert len(bomb) < limit  # only the inflated size is over the limit
    async with http_client(pipeline, Limits(max_body_bytes=limit)) as client:
        tracemalloc.start()
        try:
            response = await client.post(
                "/v1/traces", content=bomb, headers=PROTOBUF | {"Content-Encoding": "gzip"}
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 413
        assert rpc_status(response).code == 8
        assert peak < 8 * limit  # a few MiB at most, nowhere near the 64 MiB inside
        zipkin = await client.post("/api/v2/spans", content=bomb, headers={"Content-Encoding": "gzip"})
        assert zipkin.status_code == 413
        await assert_still_serves(client, store)


async def test_oversized_bodies_are_413(pipeline: Pipeline, store: DuckDBStore) -> None:
    limit = 64 * 1024
    big = sample_request(extra=[_span(TRACE, OTHER_SPAN, name="x" * limit)]).SerializeToString()
    async with http_client(pipeline, Limits(max_body_bytes=limit)) as client:
        response = await client.post("/v1/traces", content=big, headers=PROTOBUF)  # Content-Length says so
        assert response.status_code == 413
        assert "larger than" in rpc_status(response).message

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the running count catches it
            for start in range(0, len(big), 4096):
                yield big[start : start + 4096]

        response = await client.post("/v1/traces", content=chunks(), headers=JSON)
        assert response.status_code == 413
        assert response.json()["code"] == 8
        assert store.traces([TRACE]) == []
        await assert_still_serves(client, store)


@pytest.mark.parametrize(
    ("body", "encoding"), [(b"", None), (gzip.compress(b""), "gzip"), (gzip.compress(b"abc")[:-6], "gzip")]
)
async def test_empty_or_truncated_bodies_are_400(
    client: httpx.AsyncClient, store: DuckDBStore, body: bytes, encoding: str | None
) -> None:
    headers = PROTOBUF | ({"Content-Encoding": encoding} if encoding else {})
    response = await client.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 400
    assert rpc_status(response).code == 3
    await assert_still_serves(client, store)


async def test_only_post_is_routed(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/traces")).status_code == 405
    assert (await client.get("/api/v2/spans")).status_code == 405


# ---- overload: queue full and store failure ------------------------------------------------


async def test_queue_full_is_429_and_resource_exhausted(
    client: httpx.AsyncClient, pipeline: Pipeline, controlled: ControlledStore, store: DuckDBStore
) -> None:
    controlled.release.clear()
    first = pipeline.offer(one_span_batch(OTHER_TRACE))  # held in the store: the queue stays full
    body = sample_request().SerializeToString()
    try:
        response = await client.post("/v1/traces", content=body, headers=PROTOBUF)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert rpc_status(response).code == 8
        response = await client.post("/v1/traces", content=json.dumps(sample_json()), headers=JSON)
        assert (response.status_code, response.json()["code"]) == (429, 8)
        zipkin = await client.post("/api/v2/spans", content=json.dumps(zipkin_spans()), headers=JSON)
        assert (zipkin.status_code, zipkin.headers["Retry-After"]) == (429, "1")

        async with grpc_channel(pipeline) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await grpc_export(channel, body)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(refused.value.trailing_metadata() or ())
        assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
        details = RpcStatus.FromString(trailers["grpc-status-details-bin"])
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert details.details[0].Is(RetryInfo.DESCRIPTOR)
    finally:
        controlled.release.set()
    assert await asyncio.wrap_future(first) == 1
    assert store.traces([TRACE]) == []
    await assert_still_serves(client, store)


async def test_store_failure_is_503_and_unavailable(
    client: httpx.AsyncClient, pipeline: Pipeline, controlled: ControlledStore, store: DuckDBStore
) -> None:
    controlled.failing = True
    body = sample_request().SerializeToString()
    response = await client.post("/v1/traces", content=body, headers=PROTOBUF)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert rpc_status(response).code == 14
    zipkin = await client.post("/api/v2/spans", content=json.dumps(zipkin_spans()), headers=JSON)
    assert zipkin.status_code == 503
    assert "Retry-After" in zipkin.headers
    async with grpc_channel(pipeline) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await grpc_export(channel, body)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk full" in (refused.value.details() or "")
        controlled.failing = False
        assert not (await grpc_export(channel, body)).HasField("partial_success")
    assert_sample_stored(store)
    await assert_still_serves(client, store)


# ---- OTLP/gRPC -------------------------------------------------------------------------------


async def test_grpc_export_stores_and_reports_partial_success(pipeline: Pipeline, store: DuckDBStore) -> None:
    short = _span(TRACE, b"\x01", name="short id", start_time_unix_nano=T0, end_time_unix_nano=T0)
    async with grpc_channel(pipeline) as channel:
        response = await grpc_export(channel, sample_request(extra=[short]).SerializeToString())
        assert response.partial_success.rejected_spans == 1
        assert_sample_stored(store)
        response = await grpc_export(channel, sample_request(OTHER_TRACE).SerializeToString())
        assert not response.HasField("partial_success")
    assert_sample_stored(store, OTHER_TRACE)


async def test_grpc_undecodable_is_invalid_argument(pipeline: Pipeline, store: DuckDBStore) -> None:
    async with grpc_channel(pipeline) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await grpc_export(channel, b"\x0a\xff\xff\xff\xff\x0f garbage")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await grpc_export(channel, sample_request().SerializeToString())  # the server still serves
    assert_sample_stored(store)


async def test_grpc_message_limit_is_enforced(pipeline: Pipeline, store: DuckDBStore) -> None:
    big = sample_request(extra=[_span(TRACE, OTHER_SPAN, name="x" * 8192)]).SerializeToString()
    async with grpc_channel(pipeline, max_message_bytes=4096) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await grpc_export(channel, big)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert store.traces([TRACE]) == []


def sdk_spans() -> tuple[ReadableSpan, ...]:
    """Spans recorded by the OpenTelemetry SDK: a server span with an erroring client child."""
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "sdk-app"}))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("sdk.scope", "0.9")
    with tracer.start_as_current_span("handle", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/cart")
        with tracer.start_as_current_span("query", kind=SpanKind.CLIENT) as child:
            child.add_event("row", {"count": 3})
            child.set_status(StatusCode.ERROR, "timeout")
    provider.shutdown()
    return recorded.get_finished_spans()


def assert_sdk_spans_stored(store: DuckDBStore, spans: tuple[ReadableSpan, ...]) -> None:
    trace_id = spans[0].context.trace_id.to_bytes(16, "big")
    [stored] = store.traces([trace_id])
    by_name = {span.operation: span for span in stored}
    handle, query = by_name["handle"], by_name["query"]
    assert query.parent_id == handle.span_id == f"{spans[1].context.span_id:016x}"
    assert (handle.service, handle.kind_name, query.kind_name) == ("sdk-app", "server", "client")
    assert handle.attributes["http.route"] == "/cart"
    assert (query.status, query.status_message) == (STATUS_ERROR, "timeout")
    assert [(e.name, e.attributes) for e in query.events] == [("row", {"count": 3})]
    assert handle.status == STATUS_UNSET
    assert handle.scope_name == "sdk.scope"


async def test_the_sdks_grpc_exporter_is_understood(pipeline: Pipeline, store: DuckDBStore) -> None:
    spans = sdk_spans()
    server = make_grpc_server(4 << 20)
    server.add_generic_rpc_handlers((otlp_grpc.RECEIVER.handler(pipeline),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    try:
        assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
        await server.stop(None)
    assert_sdk_spans_stored(store, spans)


async def test_the_sdks_protobuf_and_json_encodings_are_understood(
    client: httpx.AsyncClient, store: DuckDBStore
) -> None:
    spans = sdk_spans()
    response = await client.post(
        "/v1/traces", content=encode_spans(spans).SerializeToString(), headers=PROTOBUF
    )
    assert response.status_code == 200
    assert_sdk_spans_stored(store, spans)

    # protobuf's own JSON mapping differs from OTLP/JSON only in the ids (base64, not hex)
    again = sdk_spans()
    document = json_format.MessageToDict(encode_spans(again))
    for resource_spans in document["resourceSpans"]:
        for span in resource_spans["scopeSpans"][0]["spans"]:
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in span:
                    span[key] = base64.b64decode(span[key]).hex()
    response = await client.post("/v1/traces", content=json.dumps(document), headers=JSON)
    assert response.status_code == 200, response.text
    assert_sdk_spans_stored(store, again)


# ---- Zipkin ----------------------------------------------------------------------------------

ZIPKIN_TRACE = "d269b633813fc60c"  # 16 hex: the 64-bit trace ids older Zipkin tracers send


def zipkin_spans() -> list[dict[str, Any]]:
    return [
        {
            "traceId": ZIPKIN_TRACE,
            "id": "a000000000000001",
            "name": "get /products",
            "kind": "SERVER",
            "timestamp": T0_US,
            "duration": 9000,
            "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080},
            "tags": {"http.method": "GET", "http.path": "/products"},
            "debug": True,
        },
        {
            "traceId": ZIPKIN_TRACE,
            "parentId": "a000000000000001",
            "id": "a000000000000002",
            "name": "select",
            "kind": "CLIENT",
            "timestamp": T0_US + 1000,
            "duration": 4000,
            "localEndpoint": {"serviceName": "frontend"},
            "remoteEndpoint": {"serviceName": "postgres", "ipv4": "10.0.0.9", "port": 5432},
            "tags": {"db.statement": "select 1", "error": "connection reset"},
            "annotations": [{"timestamp": T0_US + 1500, "value": "retrying"}],
        },
        {
            "traceId": ZIPKIN_TRACE,
            "parentId": "a000000000000002",
            "id": "a000000000000003",
            "name": "publish",
            "kind": "PRODUCER",
            "timestamp": T0_US + 2000,
            "duration": 10,
            "localEndpoint": {"serviceName": "worker"},
            "tags": {"otel.status_code": "OK", "otel.scope.name": "kafka-lib", "otel.scope.version": "3"},
        },
    ]


async def test_zipkin_round_trip(client: httpx.AsyncClient, store: DuckDBStore) -> None:
    response = await client.post("/api/v2/spans", content=json.dumps(zipkin_spans()), headers=JSON)
    assert (response.status_code, response.content) == (202, b"")
    [spans] = store.traces([bytes(8) + bytes.fromhex(ZIPKIN_TRACE)])
    by_name = {span.operation: span for span in spans}
    server, client_span, producer = by_name["get /products"], by_name["select"], by_name["publish"]
    assert server.trace_id == "0" * 16 + ZIPKIN_TRACE
    assert (server.span_id, server.parent_id) == ("a000000000000001", "")
    assert client_span.parent_id == "a000000000000001"
    assert (server.kind_name, client_span.kind_name, producer.kind_name) == ("server", "client", "producer")
    assert (server.service, producer.service) == ("frontend", "worker")
    assert server.resource == {"service.name": "frontend"}
    assert (server.start_us, server.duration_us) == (T0_US, 9000)
    assert server.attributes == {
        "http.method": "GET",
        "http.path": "/products",
        "net.host.ip": "10.0.0.1",
        "net.host.port": 8080,
    }
    assert server.status == STATUS_UNSET
    assert client_span.attributes == {
        "db.statement": "select 1",
        "peer.service": "postgres",
        "net.peer.ip": "10.0.0.9",
        "net.peer.port": 5432,
    }
    assert (client_span.status, client_span.status_message) == (STATUS_ERROR, "connection reset")
    assert client_span.events == [Event(T0_US + 1500, "retrying", {})]
    assert producer.status == STATUS_OK
    assert (producer.scope_name, producer.scope_version, producer.attributes) == ("kafka-lib", "3", {})


async def test_zipkin_shared_spans_keep_both_halves(client: httpx.AsyncClient, store: DuckDBStore) -> None:
    trace = "463ac35c9f6413ad48485a3953bb6124"
    shared_id = "b000000000000001"
    common = {"traceId": trace, "id": shared_id, "timestamp": T0_US, "duration": 100}
    spans = [
        common | {"name": "call", "kind": "CLIENT", "localEndpoint": {"serviceName": "caller"}},
        common
        | {"name": "serve", "kind": "SERVER", "shared": True, "localEndpoint": {"serviceName": "callee"}},
    ]
    response = await client.post("/api/v2/spans", content=json.dumps(spans))  # no Content-Type: JSON
    assert response.status_code == 202
    [stored] = store.traces([bytes.fromhex(trace)])
    by_name = {span.operation: span for span in stored}
    assert by_name["call"].span_id == shared_id
    assert by_name["serve"].parent_id == shared_id
    assert by_name["serve"].span_id not in (shared_id, "")


async def test_the_sdks_zipkin_encoding_is_understood(client: httpx.AsyncClient, store: DuckDBStore) -> None:
    spans = sdk_spans()
    local = NodeEndpoint(ipv4="127.0.0.1", port=7000)
    local.service_name = "sdk-app"  # the exporter takes it from the spans' resource
    body = JsonV2Encoder().serialize(spans, local)  # type: ignore[arg-type]  # the exporter passes these
    response = await client.post("/api/v2/spans", content=body, headers=JSON)
    assert response.status_code == 202
    trace_id = spans[0].context.trace_id.to_bytes(16, "big")
    [stored] = store.traces([trace_id])
    by_name = {span.operation: span for span in stored}
    query = by_name["query"]
    assert query.parent_id == by_name["handle"].span_id
    assert (query.status, query.status_message) == (STATUS_ERROR, "timeout")
    assert [(e.name, e.attributes) for e in query.events] == [("row", {"count": 3})]
    assert (query.service, query.scope_name) == ("sdk-app", "sdk.scope")
    assert by_name["handle"].attributes["http.route"] == "/cart"
    assert by_name["handle"].attributes["net.host.ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "not valid JSON"),
        (b'{"traceId": "1"}', "JSON array"),
        (b'[{"traceId": "xyz", "id": "01"}]', "traceId"),
        (b'[{"traceId": "' + b"a" * 33 + b'", "id": "01"}]', "traceId"),
        (b'[{"traceId": "01", "id": "01", "kind": "SIDEWAYS"}]', "kind"),
        (b'[{"traceId": "01", "id": "01", "timestamp": -5}]', "timestamp"),
        (b'[{"traceId": "01", "id": "01", "tags": {"a": {"b": 1}}}]', "tag"),
        (b'[{"traceId": "01", "id": "01", "annotations": [{"value": 3}]}]', "annotations"),
    ],
)
async def test_zipkin_bad_input_is_400(
    client: httpx.AsyncClient, store: DuckDBStore, body: bytes, reason: str
) -> None:
    response = await client.post("/api/v2/spans", content=body, headers=JSON)
    assert response.status_code == 400
    assert reason in response.text
    ok = await client.post("/api/v2/spans", content=json.dumps(zipkin_spans()), headers=JSON)
    assert ok.status_code == 202
    await assert_still_serves(client, store)


async def test_zipkin_refuses_other_media_and_large_bodies(pipeline: Pipeline, store: DuckDBStore) -> None:
    async with http_client(pipeline, Limits(max_body_bytes=1024)) as client:
        proto = await client.post("/api/v2/spans", content=b"\x0a\x00", headers=PROTOBUF)
        assert proto.status_code == 415
        big = await client.post("/api/v2/spans", content=json.dumps(zipkin_spans() * 10), headers=JSON)
        assert big.status_code == 413
        ok = await client.post("/api/v2/spans", content=json.dumps(zipkin_spans()[:1]), headers=JSON)
        assert ok.status_code == 202
    assert len(store.traces([bytes(8) + bytes.fromhex(ZIPKIN_TRACE)])[0]) == 1
