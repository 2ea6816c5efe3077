"""Run in a child process by test_tracing.py: real gRPC calls through the mesh with an SDK installed.

A tracer provider is process-wide and can be set only once, so the scenarios run here rather than in
the test process (whose other tests run without one). Prints one JSON document: the finished spans and
the JSON log lines written while they ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from boutique.asgi_server import BackgroundServer
from boutique.mesh import GrpcServer, HttpDependency, ProcessInfo, ServiceBinding
from boutique.mesh.discovery.static import StaticResolver
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.http_observe import observe_http
from boutique.mesh.logs import JsonFormatter
from boutique.mesh.tracing import setup_tracing
from boutique.shop.errors import NotFound
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc


class Catalog:
    """GetProduct answering one id, NOT_FOUND for `missing`, and an unexpected error for `boom`."""

    async def GetProduct(self, request: pb.GetProductRequest, context: Any) -> pb.Product:
        logging.getLogger("catalog").info("looking up", extra={"product_id": request.id})
        if request.id == "boom":
            raise RuntimeError("the catalog fell over")
        if request.id == "missing":
            raise NotFound("no product with id 'missing'")
        return pb.Product(id=request.id, name="Sunglasses")

    async def ListProducts(self, request: pb.Empty, context: Any) -> pb.ListProductsResponse:
        return pb.ListProductsResponse()

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: Any
    ) -> pb.SearchProductsResponse:
        return pb.SearchProductsResponse()


def described(span: ReadableSpan) -> dict[str, Any]:
    """The parts of a span the tests look at, in JSON."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
        "service": (span.resource.attributes.get("service.name") if span.resource else None),
        "instance": (span.resource.attributes.get("service.instance.id") if span.resource else None),
    }


async def scenarios() -> None:
    """Serve a catalog, call it through a GrpcDependency three ways plus a health check."""
    server = GrpcServer(
        ProcessInfo(service="productcatalog", instance_id="catalog-1"),
        [ServiceBinding(pb.DESCRIPTOR.services_by_name["ProductCatalogService"], Catalog())],
        grace=0.2,
    )
    port = await server.start()
    dependency = GrpcDependency(
        "productcatalog",
        StaticResolver([f"127.0.0.1:{port}"]),
        pb_grpc.ProductCatalogServiceStub,
        caller="tests",
    )
    try:
        await dependency.call("GetProduct", pb.GetProductRequest(id="OLJCESPC7Z"), idempotent=True)
        for product in ("missing", "boom"):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await dependency.call("GetProduct", pb.GetProductRequest(id=product))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await dependency.close()
        await server.stop()


async def item(request: Request) -> PlainTextResponse:
    """A route with a path parameter."""
    return PlainTextResponse(f"item {request.path_params['item']}")


async def healthy(request: Request) -> PlainTextResponse:
    """A probe."""
    return PlainTextResponse("ok")


async def http_scenario() -> None:
    """An HTTP service observed with `observe_http`, called through an HttpDependency: a page, a probe."""
    app = observe_http(Starlette(routes=[Route("/items/{item}", item), Route("/_healthz", healthy)]))
    web = BackgroundServer(app, "127.0.0.1", 0, "web")
    port = await web.start()
    dependency = HttpDependency("web", StaticResolver([f"127.0.0.1:{port}"]), caller="tests")
    try:
        await dependency.request("GET", "/items/42")
        await dependency.request("GET", "/_healthz")
    finally:
        await dependency.close()
        await web.stop()


def main() -> None:
    """Install tracing the way every process does, run the scenarios, print spans and logs."""
    setup = setup_tracing("scenario-app", "scenario-app-1", "9.9.9")  # OTEL_TRACES_EXPORTER=none
    memory = InMemorySpanExporter()
    assert setup.provider is not None
    setup.provider.add_span_processor(SimpleSpanProcessor(memory))
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter("scenario-app", "scenario-app-1"))
    logging.getLogger("catalog").addHandler(handler)
    logging.getLogger("catalog").setLevel(logging.INFO)
    asyncio.run(scenarios())
    asyncio.run(http_scenario())
    spans = [described(span) for span in memory.get_finished_spans()]
    json.dump({"spans": spans, "logs": lines.getvalue().splitlines()}, sys.stdout)


if __name__ == "__main__":
    main()
