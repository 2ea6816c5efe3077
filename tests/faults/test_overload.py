"""Overload for real: flood a service and the frontend far beyond their concurrency limits.

One `boutique up` runs with the limits pinned at 4 (BOUTIQUE_LIMITER_MIN/MAX/INITIAL, the adaptive
limiter held still so the test knows the limit) and a catalog that takes 100 ms per call
(EXTRA_LATENCY), so calls overlap and a flood really exceeds the limit. Asserted: the excess is refused
at once, as RESOURCE_EXHAUSTED with a retry hint (gRPC) or 503 with Retry-After (HTTP); health checks
answer throughout; a refused request does no work (no backend call behind a shed page); and the
service serves normally afterwards. Figures are printed, never asserted on.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from tests.e2e.harness import Up, start_up

LIMIT = 4
FLOOD = 60
LIMITS = {
    "BOUTIQUE_LIMITER": "on",
    "BOUTIQUE_LIMITER_MIN": str(LIMIT),
    "BOUTIQUE_LIMITER_MAX": str(LIMIT),
    "BOUTIQUE_LIMITER_INITIAL": str(LIMIT),
    "EXTRA_LATENCY": "100ms",
}


@dataclass
class Answer:
    """How one flooded call ended."""

    code: str  # "OK", a gRPC status name, or "HTTP nnn"
    seconds: float
    details: str = ""
    trailers: tuple[tuple[str, str | bytes], ...] = ()
    headers: httpx.Headers | None = None


def process(up: Up, service: str) -> dict:
    """The up.json entry of a service's first instance."""
    return next(p for p in up.state()["processes"] if p["service"] == service)


def metric(metrics_address: str, name: str, **labels: str) -> float:
    """The value of one sample from a process's /metrics (0 when absent)."""
    text = httpx.get(f"http://{metrics_address}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def handled(metrics_address: str, method: str, code: str) -> float:
    """RPCs of the catalog's `method` completed with `code`, per the catalog's own metrics."""
    return metric(metrics_address, "grpc_server_handled_total", grpc_method=method, grpc_code=code)


async def flood_grpc(address: str) -> tuple[list[Answer], list[int]]:
    """FLOOD concurrent ListProducts calls, with health checks sent while they are in flight."""
    async with grpc.aio.insecure_channel(address) as channel:
        catalog = pb_grpc.ProductCatalogServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def call() -> Answer:
            began = time.monotonic()
            try:
                await catalog.ListProducts(pb.Empty(), timeout=10)
                return Answer("OK", time.monotonic() - began)
            except grpc.aio.AioRpcError as exc:
                return Answer(
                    exc.code().name,
                    time.monotonic() - began,
                    exc.details() or "",
                    tuple(exc.trailing_metadata()),
                )

        async def checks() -> list[int]:
            statuses = []
            for _ in range(5):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                statuses.append(reply.status)
                await asyncio.sleep(0.01)
            return statuses

        checking = asyncio.ensure_future(checks())
        answers = await asyncio.gather(*(call() for _ in range(FLOOD)))
        return list(answers), await checking


async def flood_http(url: str) -> tuple[list[Answer], list[int]]:
    """FLOOD concurrent home pages (each on its own connection), with /_healthz sent meanwhile."""
    limits = httpx.Limits(max_connections=FLOOD + 10)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits, trust_env=False) as client:

        async def page() -> Answer:
            began = time.monotonic()
            reply = await client.get("/")
            return Answer(f"HTTP {reply.status_code}", time.monotonic() - began, headers=reply.headers)

        async def checks() -> list[int]:
            statuses = []
            for _ in range(5):
                statuses.append((await client.get("/_healthz")).status_code)
                await asyncio.sleep(0.01)
            return statuses

        checking = asyncio.ensure_future(checks())
        answers = await asyncio.gather(*(page() for _ in range(FLOOD)))
        return list(answers), await checking


def figures(what: str, answers: list[Answer]) -> None:
    """Print how many were served and shed, and how fast each kind was answered."""
    by_code: dict[str, list[float]] = {}
    for answer in answers:
        by_code.setdefault(answer.code, []).append(answer.seconds * 1000)
    parts = [
        f"{code} {len(ms)} (median {statistics.median(ms):.1f} ms)" for code, ms in sorted(by_code.items())
    ]
    print(f"{what}: " + ", ".join(parts))


def test_a_flood_beyond_the_limits_is_shed_at_once_and_the_shop_keeps_serving(tmp_path: Path) -> None:
    up = start_up(tmp_path, "--no-observatory", env=LIMITS)
    try:
        catalog = process(up, "productcatalog")
        frontend = process(up, "frontend")

        # --- gRPC: the catalog itself -----------------------------------------------------------
        before_ok = handled(catalog["metrics"], "ListProducts", "OK")
        answers, statuses = asyncio.run(flood_grpc(catalog["address"]))
        figures("catalog flood", answers)
        served = [a for a in answers if a.code == "OK"]
        shed = [a for a in answers if a.code != "OK"]
        assert served and shed
        assert {a.code for a in shed} == {"RESOURCE_EXHAUSTED"}
        for answer in shed:
            trailers = dict(answer.trailers)
            assert "concurrency limit" in answer.details and "retry" in answer.details
            assert trailers["x-boutique-shed"] == "concurrency-limit"
            assert int(str(trailers["grpc-retry-pushback-ms"])) > 0
            status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])  # type: ignore[arg-type]
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry)
            assert retry.retry_delay.ToNanoseconds() > 0
        assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 5  # never shed
        # Only the admitted calls ran the handler: the catalog counted exactly the OK answers as OK,
        # and the refused ones as RESOURCE_EXHAUSTED.
        assert handled(catalog["metrics"], "ListProducts", "OK") - before_ok == len(served)
        assert handled(catalog["metrics"], "ListProducts", "RESOURCE_EXHAUSTED") >= len(shed)
        assert metric(catalog["metrics"], "boutique_mesh_concurrency_limit", limiter="grpc") == LIMIT
        assert metric(catalog["metrics"], "boutique_mesh_concurrency_shed_total", limiter="grpc") >= len(shed)

        # --- HTTP: the frontend ------------------------------------------------------------------
        before_lists = handled(catalog["metrics"], "ListProducts", "OK")
        before_shed = metric(frontend["metrics"], "boutique_mesh_concurrency_shed_total", limiter="http")
        pages, checks = asyncio.run(flood_http(up.url))
        figures("frontend flood", pages)
        served_pages = [p for p in pages if p.code == "HTTP 200"]
        shed_pages = [p for p in pages if p.code != "HTTP 200"]
        assert served_pages and shed_pages
        assert {p.code for p in shed_pages} == {"HTTP 503"}
        for answer in shed_pages:
            assert answer.headers is not None
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.headers["x-boutique-shed"] == "concurrency-limit"
        assert checks == [200] * 5
        # A shed page made no call: each served home page lists the products once, a shed one never.
        assert handled(catalog["metrics"], "ListProducts", "OK") - before_lists == len(served_pages)
        shed_now = metric(frontend["metrics"], "boutique_mesh_concurrency_shed_total", limiter="http")
        assert shed_now - before_shed == len(shed_pages)
        status = httpx.get(f"http://{frontend['metrics']}/mesh/status", timeout=5).json()
        limiter = next(x for x in status["limiters"] if x["name"] == "http")
        assert limiter["limit"] == LIMIT and limiter["shed"] >= len(shed_pages)
        print(f"frontend limiter after the flood: {limiter}")

        # --- afterwards: business as usual ---------------------------------------------------------
        for _ in range(5):
            assert httpx.get(up.url + "/", timeout=10).status_code == 200
        with grpc.insecure_channel(catalog["address"]) as channel:
            stub = pb_grpc.ProductCatalogServiceStub(channel)
            for _ in range(5):
                assert stub.ListProducts(pb.Empty(), timeout=10).products
    finally:
        up.stop()
