"""Catalog over real gRPC: list, get, search, NOT_FOUND and malformed requests."""

from __future__ import annotations

import grpc
import pytest

from boutique.shop.errors import InvalidArgument, NotFound
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.productcatalog.server import bindings
from tests.support import serving

EXPECTED_PRICES = {
    "OLJCESPC7Z": (19, 990_000_000),
    "66VCHSJNUP": (18, 990_000_000),
    "1YMWWN1N4O": (109, 990_000_000),
    "L9ECAV7KIM": (89, 990_000_000),
    "2ZYFJ3GM2N": (24, 990_000_000),
    "0PUK6V6EV0": (18, 990_000_000),
    "LS4PSXUNUM": (18, 490_000_000),
    "9SIQT8TOJO": (5, 490_000_000),
    "6E92ZMYYFZ": (8, 990_000_000),
}


@pytest.fixture
async def catalog():
    async with serving("productcatalog", bindings()) as endpoints:
        client = CatalogClient(endpoints)
        yield client
        await client.close()


async def test_lists_the_nine_products_with_their_prices(catalog: CatalogClient) -> None:
    products = await catalog.list_products()
    assert {p.id: (p.price_usd.units, p.price_usd.nanos) for p in products} == EXPECTED_PRICES
    assert all(p.price_usd.currency_code == "USD" and p.categories and p.picture for p in products)


async def test_get_product_and_not_found(catalog: CatalogClient) -> None:
    product = await catalog.get_product("1YMWWN1N4O")
    assert product.price_usd.units == 109
    with pytest.raises(NotFound, match="NOPE"):
        await catalog.get_product("NOPE")
    with pytest.raises(InvalidArgument):
        await catalog.get_product("")


async def test_search_is_case_insensitive_on_name_and_description(catalog: CatalogClient) -> None:
    assert [p.id for p in await catalog.search("WATCH")] == ["1YMWWN1N4O"]
    by_description = await catalog.search("stoneware")
    assert {p.id for p in by_description} == {"0PUK6V6EV0", "6E92ZMYYFZ"}
    assert await catalog.search("no such thing anywhere") == []
    with pytest.raises(InvalidArgument):
        await catalog.search("x" * 1000)


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(catalog: CatalogClient) -> None:
    address = catalog.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.ProductCatalogService/GetProduct")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        served_by = dict(info.value.trailing_metadata() or ())
        assert served_by.get("x-served-by") == "productcatalog-test"
    assert (await catalog.get_product("OLJCESPC7Z")).name
    assert isinstance(await catalog.list_products(), list)
