"""The logs receivers under overload and store failure: the trace receivers' answers, for log records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import httpx
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from starlette.applications import Starlette

from boutique.observatory.logs import query as q
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.receivers import RECEIVERS, GrpcReceiver, HttpReceiver, Limits
from boutique.observatory.receivers.base import make_grpc_server
from tests.observatory import test_receivers
from tests.observatory.test_logs import decoded, record, request
from tests.observatory.test_receivers import ControlledStore

EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
HTTP = next(r for r in RECEIVERS if isinstance(r, HttpReceiver) and r.name == "otlp_logs_http")
GRPC = next(r for r in RECEIVERS if isinstance(r, GrpcReceiver) and r.name == "otlp_logs_grpc")
BODY = request([record("waiting")]).SerializeToString()

# The trace receivers' fixtures: a store whose appends can be held or fail, a pipeline one item fills.
store, controlled, pipeline = test_receivers.store, test_receivers.controlled, test_receivers.pipeline


@pytest.fixture
async def client(pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=HTTP.routes(pipeline, Limits()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://observatory"
    ) as opened:
        yield opened


@asynccontextmanager
async def export_call(pipeline: Pipeline) -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable]:
    """LogsService/Export on a real gRPC server on a loopback port (raw bytes both ways)."""
    server = make_grpc_server(4 << 20)
    server.add_generic_rpc_handlers((GRPC.handler(pipeline),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel.unary_unary(EXPORT)
    finally:
        await channel.close()
        await server.stop(None)


def stored_bodies(controlled: ControlledStore) -> list[str]:
    return [r["body"] for r in controlled.read(lambda cursor: q.find(cursor, q.LogQuery()))]


async def test_a_full_queue_is_429_and_resource_exhausted_with_a_retry_delay(
    client: httpx.AsyncClient, pipeline: Pipeline, controlled: ControlledStore
) -> None:
    controlled.release.clear()
    first = pipeline.offer(decoded([record("held in the store")]))  # the queue stays full
    try:
        response = await client.post("/v1/logs", content=BODY, headers=PROTOBUF)
        assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
        assert RpcStatus.FromString(response.content).code == 8
        as_json = await client.post("/v1/logs", content=b'{"resourceLogs": []}', headers=JSON)
        assert as_json.status_code == 200  # nothing to queue: answered at once
        async with export_call(pipeline) as export:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await export(BODY, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "cannot take log records now" in (refused.value.details() or "")
        trailers = dict(refused.value.trailing_metadata() or ())
        assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
    finally:
        controlled.release.set()
    assert await asyncio.wrap_future(first) == 1
    assert stored_bodies(controlled) == ["held in the store"]


async def test_a_failing_store_is_503_and_unavailable_then_takes_records_again(
    client: httpx.AsyncClient, pipeline: Pipeline, controlled: ControlledStore
) -> None:
    controlled.failing = True
    response = await client.post("/v1/logs", content=BODY, headers=PROTOBUF)
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert RpcStatus.FromString(response.content).code == 14
    async with export_call(pipeline) as export:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await export(BODY, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk full" in (refused.value.details() or "")
        controlled.failing = False
        answer = ExportLogsServiceResponse.FromString(await export(BODY, timeout=10))
        assert not answer.HasField("partial_success")
    assert stored_bodies(controlled) == ["waiting"]
