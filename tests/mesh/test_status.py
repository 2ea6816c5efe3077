"""The status endpoints of a process (/metrics, /mesh/status, /mesh/stream, /healthz) served for real."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from boutique.mesh.dependency import CallPolicy
from boutique.mesh.errors import CircuitOpen
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.resilience import BreakerConfig, BreakerState
from boutique.mesh.runtime import Mesh
from boutique.mesh.status import StatusServer
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc

HYSTRIX_FIELDS = {
    "type",
    "name",
    "group",
    "isCircuitBreakerOpen",
    "errorPercentage",
    "errorCount",
    "requestCount",
    "rollingCountSuccess",
    "rollingCountFailure",
    "rollingCountTimeout",
    "rollingCountShortCircuited",
    "rollingCountFallbackSuccess",
    "rollingCountFallbackFailure",
    "latencyTotal",
    "latencyTotal_mean",
    "currentConcurrentExecutionCount",
    "reportingHosts",
}
_names = itertools.count()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tripped:
    """A mesh with one dependency whose breaker real failures have opened."""

    mesh: Mesh
    dependency: GrpcDependency
    address: str

    @property
    def breaker(self) -> str:
        """The breaker's name (caller->dependency)."""
        assert self.dependency.breaker is not None
        return self.dependency.breaker.name


@pytest.fixture
async def tripped(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Tripped]:
    """A dependency pointed at a closed port: connection failures open its breaker."""
    service = f"statuscheck{next(_names)}x{time.monotonic_ns() % 1_000_000}"
    variable = f"{service.upper()}_SERVICE_ADDR"
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv(variable, address)
    mesh = Mesh("status-test")
    policy = CallPolicy(
        breaker=BreakerConfig(window_size=2, minimum_calls=2, wait_open=60.0), backoff_base=0.001
    )
    dependency = mesh.grpc(service, demo_pb2_grpc.ProductCatalogServiceStub, policy, variable)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await dependency.call("GetProduct", pb.GetProductRequest(id="x"))
    with pytest.raises(CircuitOpen):
        await dependency.call("GetProduct", pb.GetProductRequest(id="x"))
    answer = await dependency.call(
        "GetProduct", pb.GetProductRequest(id="x"), fallback=lambda exc: pb.Product(name="fallback")
    )
    assert answer.name == "fallback"
    assert dependency.breaker is not None and dependency.breaker.state is BreakerState.OPEN
    yield Tripped(mesh, dependency, address)
    await mesh.close()


@pytest.fixture
async def status_url(tripped: Tripped) -> AsyncIterator[str]:
    """The tripped mesh's status server on a free loopback port, no token."""
    server = StatusServer(tripped.mesh, "127.0.0.1", 0)
    port = await server.start()
    yield f"http://127.0.0.1:{port}"
    await server.stop()


async def first_breaker_event(response: httpx.Response, name: str) -> dict[str, Any]:
    """Read Server-Sent Events until a default-type event carrying the named breaker arrives."""
    kind, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data and kind == "message":
                event = json.loads("\n".join(data))
                if event.get("name") == name:
                    return dict(event)
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
    raise AssertionError("the stream ended without an event for the breaker")


async def test_metrics_show_the_open_breaker(tripped: Tripped, status_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{status_url}/metrics")
    assert response.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    states = {s.labels["breaker"]: s.value for s in families["boutique_mesh_breaker_state"].samples}
    assert states[tripped.breaker] == 1
    fallbacks = {
        s.labels["dependency"]: s.value
        for s in families["boutique_mesh_fallbacks"].samples
        if s.name == "boutique_mesh_fallbacks_total"
    }
    assert fallbacks[tripped.dependency.name] == 1


async def test_status_lists_the_dependency_and_its_instances(tripped: Tripped, status_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{status_url}/mesh/status")
    assert response.status_code == 200
    body = response.json()
    assert body["caller"] == "status-test"
    (dependency,) = [d for d in body["dependencies"] if d["dependency"] == tripped.dependency.name]
    assert [i["endpoint"] for i in dependency["instances"]] == [tripped.address]
    assert dependency["breaker"]["state"] == "OPEN"
    assert dependency["breaker"]["name"] == tripped.breaker


async def test_stream_delivers_a_hystrix_event_for_the_open_breaker(
    tripped: Tripped, status_url: str
) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", f"{status_url}/mesh/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = await asyncio.wait_for(first_breaker_event(response, tripped.breaker), 10)

    assert set(event) >= HYSTRIX_FIELDS, f"missing {HYSTRIX_FIELDS - set(event)}"
    assert event["isCircuitBreakerOpen"] is True
    assert event["group"] == tripped.dependency.name
    assert event["rollingCountFailure"] == 2
    assert event["rollingCountShortCircuited"] == 2  # the refused call and the one the fallback answered
    assert event["rollingCountFallbackSuccess"] == 1
    assert event["requestCount"] == 4
    assert event["errorPercentage"] == 100
    assert set(event["latencyTotal"]) >= {"0", "50", "99", "100"}
    assert event["instances"] == 1


async def test_clients_leaving_the_stream_leave_the_server_serving(tripped: Tripped, status_url: str) -> None:
    idle = asyncio.all_tasks()
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):
            async with client.stream("GET", f"{status_url}/mesh/stream") as response:
                await asyncio.wait_for(first_breaker_event(response, tripped.breaker), 10)
        async with client.stream("GET", f"{status_url}/mesh/stream") as response:
            assert response.status_code == 200  # and gone before reading anything

    # the server stops streaming to departed clients: no request task outlives its client
    ends = time.monotonic() + 10
    while asyncio.all_tasks() - idle:
        assert time.monotonic() < ends, f"still streaming to nobody: {asyncio.all_tasks() - idle}"
        await asyncio.sleep(0.05)

    # fresh connections: the server still answers every route, streams included
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{status_url}/healthz")).text == "ok"
        assert (await client.get(f"{status_url}/mesh/status")).status_code == 200
        async with client.stream("GET", f"{status_url}/mesh/stream") as response:
            event = await asyncio.wait_for(first_breaker_event(response, tripped.breaker), 10)
    assert event["isCircuitBreakerOpen"] is True


async def test_stopping_the_server_ends_an_open_stream(tripped: Tripped) -> None:
    server = StatusServer(tripped.mesh, "127.0.0.1", 0)
    port = await server.start()
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", f"http://127.0.0.1:{port}/mesh/stream") as response,
    ):
        stopping: asyncio.Task[None] | None = None

        async def watch() -> None:
            nonlocal stopping
            async for line in response.aiter_lines():
                if line.startswith("data:") and stopping is None:  # streaming: now stop the server
                    stopping = asyncio.create_task(server.stop())

        await asyncio.wait_for(watch(), 10)  # the watcher sees the stream end, not events forever
        assert stopping is not None
        await asyncio.wait_for(stopping, 5)


async def test_token_guards_every_status_route(tripped: Tripped) -> None:
    server = StatusServer(tripped.mesh, "127.0.0.1", 0, token="s3cret-token")
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for path in ("/metrics", "/mesh/status", "/mesh/stream"):
                assert (await client.get(base + path)).status_code == 401, path
                wrong = {"authorization": "Bearer not-it"}
                assert (await client.get(base + path, headers=wrong)).status_code == 401, path
            right = {"authorization": "Bearer s3cret-token"}
            assert (await client.get(f"{base}/metrics", headers=right)).status_code == 200
            assert (await client.get(f"{base}/mesh/status", headers=right)).status_code == 200
            async with client.stream("GET", f"{base}/mesh/stream", headers=right) as response:
                assert response.status_code == 200
                event = await asyncio.wait_for(first_breaker_event(response, tripped.breaker), 10)
                assert event["isCircuitBreakerOpen"] is True
            assert (await client.get(f"{base}/healthz")).status_code == 200  # probes carry no token
    finally:
        await server.stop()


def test_non_loopback_host_starts_without_a_token() -> None:
    """Off loopback /metrics stays scrapable and /mesh/* refuse instead (see test_container_ready)."""
    mesh = Mesh("status-test")
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        StatusServer(mesh, host)  # not started: built without complaint
    StatusServer(mesh, "0.0.0.0", token="s3cret-token")
    StatusServer(mesh, "127.0.0.1")
