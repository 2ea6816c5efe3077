"""Recommendations over real gRPC against a real in-process catalog, and with the catalog down."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.mesh import StaticEndpoints
from boutique.shop.errors import InvalidArgument
from boutique.shop.productcatalog import server as catalog_server
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.productcatalog.service import load_products
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.recommendation.client import FEATURED, RecommendationClient, known_featured
from boutique.shop.recommendation.server import bindings
from tests.support import serving

CATALOG_IDS = [p.id for p in load_products()]


@pytest.fixture
async def recommendation():
    async with serving("productcatalog", catalog_server.bindings()) as catalog_endpoints:
        catalog = CatalogClient(catalog_endpoints)
        async with serving("recommendation", bindings(catalog)) as endpoints:
            client = RecommendationClient(endpoints)
            yield client
            await client.close()
        await catalog.close()


async def test_recommends_up_to_five_catalog_products_never_the_requested(
    recommendation: RecommendationClient,
) -> None:
    requested = CATALOG_IDS[:3]
    seen: set[str] = set()
    for _ in range(30):
        ids = await recommendation.list_recommendations("user-1", requested)
        assert len(ids) == 5
        assert len(set(ids)) == 5
        assert not set(ids) & set(requested)
        assert set(ids) <= set(CATALOG_IDS)
        seen |= set(ids)
    assert seen == set(CATALOG_IDS) - set(requested)  # random, so every other product shows up


async def test_fewer_than_five_left(recommendation: RecommendationClient) -> None:
    requested = CATALOG_IDS[:6]
    ids = await recommendation.list_recommendations("user-1", requested)
    assert sorted(ids) == sorted(CATALOG_IDS[6:])
    assert await recommendation.list_recommendations("user-1", CATALOG_IDS) == []


async def test_no_ids_and_unknown_ids(recommendation: RecommendationClient) -> None:
    ids = await recommendation.list_recommendations("", ["NOT-A-PRODUCT"])
    assert len(ids) == 5 and set(ids) <= set(CATALOG_IDS)


@pytest.mark.parametrize(
    ("user_id", "product_ids", "message"),
    [
        ("u" * 129, [], "user_id"),
        ("user-1", ["X"] * 51, "product_ids"),
        ("user-1", ["P" * 65], "product id"),
    ],
)
async def test_oversized_requests_are_invalid_argument(
    recommendation: RecommendationClient, user_id: str, product_ids: list[str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await recommendation.list_recommendations(user_id, product_ids)


async def test_limits_themselves_are_accepted(recommendation: RecommendationClient) -> None:
    ids = await recommendation.list_recommendations("u" * 128, ["P" * 64] * 50)
    assert len(ids) == 5


async def test_catalog_down_is_unavailable_and_server_keeps_serving() -> None:
    async with serving("productcatalog", catalog_server.bindings()) as catalog_endpoints:
        pass  # the catalog is stopped from here on; its address now refuses connections
    catalog = CatalogClient(catalog_endpoints, timeout=2.0)
    async with serving("recommendation", bindings(catalog)) as endpoints:
        client = RecommendationClient(endpoints)
        async with grpc.aio.insecure_channel(endpoints.addresses[0]) as channel:
            stub = pb_grpc.RecommendationServiceStub(channel)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ListRecommendations(pb.ListRecommendationsRequest(user_id="user-1"), timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "productcatalog" in (info.value.details() or "")
        # Callers through the typed client get the featured products instead of an error.
        assert set(await client.list_recommendations("user-1", [])) <= set(FEATURED)
        with pytest.raises(InvalidArgument):
            await client.list_recommendations("u" * 200, [])
        async with grpc.aio.insecure_channel(endpoints.addresses[0]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await client.close()
    await catalog.close()


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(
    recommendation: RecommendationClient,
) -> None:
    address = recommendation.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.RecommendationService/ListRecommendations")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x12\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(await recommendation.list_recommendations("user-1", [])) == 5


def test_the_featured_products_are_in_the_catalog() -> None:
    assert set(FEATURED) <= set(CATALOG_IDS)


def test_unknown_featured_ids_are_logged_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        kept = known_featured(CATALOG_IDS, ("GONE-1", FEATURED[0], "GONE-2", FEATURED[1]))
    assert kept == FEATURED[:2]
    (warning,) = [r for r in caplog.records if r.getMessage().startswith("featured products missing")]
    assert warning.unknown_ids == ["GONE-1", "GONE-2"]  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert known_featured(CATALOG_IDS) == FEATURED
    assert not caplog.records


async def test_the_fallback_never_offers_an_unknown_featured_id() -> None:
    catalog = CatalogClient(StaticEndpoints(("127.0.0.1:9",)))
    async with serving("recommendation", bindings(catalog)) as ends:
        pass  # stopped: the fallback answers from here on
    await catalog.close()
    client = RecommendationClient(ends, featured=("GONE", *FEATURED[:2]))
    try:
        assert client.featured == FEATURED[:2]
        assert await client.list_recommendations("user-1", []) == list(FEATURED[:2])
    finally:
        await client.close()
