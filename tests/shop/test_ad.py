"""Ads over real gRPC: ads by category, random ads when nothing matches, limits and malformed requests."""

from __future__ import annotations

import grpc
import pytest

from boutique.shop.ad.client import AdClient
from boutique.shop.ad.server import bindings
from boutique.shop.ad.service import default_ads
from boutique.shop.errors import InvalidArgument
from boutique.shop.productcatalog.service import load_products
from tests.support import serving

TANK_TOP, WATCH, SUNGLASSES, LOAFERS = "66VCHSJNUP", "1YMWWN1N4O", "OLJCESPC7Z", "L9ECAV7KIM"
HAIRDRYER, CANDLE_HOLDER, BAMBOO_JAR, MUG = "2ZYFJ3GM2N", "0PUK6V6EV0", "9SIQT8TOJO", "6E92ZMYYFZ"
ALL_AD_PRODUCTS = {TANK_TOP, WATCH, SUNGLASSES, LOAFERS, HAIRDRYER, CANDLE_HOLDER, BAMBOO_JAR, MUG}


@pytest.fixture
async def ads():
    async with serving("ad", bindings()) as endpoints:
        client = AdClient(endpoints)
        yield client
        await client.close()


def products_of(ads: list) -> list[str]:
    """The product id each ad links to, in order."""
    prefix = "/product/"
    assert all(ad.redirect_url.startswith(prefix) for ad in ads)
    return [ad.redirect_url.removeprefix(prefix) for ad in ads]


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("clothing", {TANK_TOP}),
        ("accessories", {WATCH, SUNGLASSES}),
        ("footwear", {LOAFERS}),
        ("hair", {HAIRDRYER}),
        ("beauty", {HAIRDRYER}),
        ("decor", {CANDLE_HOLDER}),
        ("home", {CANDLE_HOLDER}),
        ("kitchen", {BAMBOO_JAR, MUG}),
    ],
)
async def test_ads_by_category(ads: AdClient, category: str, expected: set[str]) -> None:
    result = await ads.get_ads([category])
    assert set(products_of(result)) == expected
    assert len(result) == len(expected)
    assert all(ad.text for ad in result)


async def test_matched_keys_combine_without_repeats(ads: AdClient) -> None:
    result = await ads.get_ads(["hair", "beauty", "kitchen", "hair", "no-such-category"])
    ids = products_of(result)
    assert sorted(ids) == sorted([HAIRDRYER, BAMBOO_JAR, MUG])


async def test_keys_match_ignoring_case_and_spaces(ads: AdClient) -> None:
    assert products_of(await ads.get_ads([" Footwear "])) == [LOAFERS]


@pytest.mark.parametrize("keys", [[], ["no-such-category"], ["", "nothing", "else"]])
async def test_no_match_gives_two_random_distinct_ads(ads: AdClient, keys: list[str]) -> None:
    seen: set[str] = set()
    for _ in range(40):
        ids = products_of(await ads.get_ads(keys))
        assert len(ids) == 2
        assert ids[0] != ids[1]
        assert set(ids) <= ALL_AD_PRODUCTS
        seen |= set(ids)
    assert len(seen) > 2  # random, not a fixed pair


def test_every_ad_leads_to_a_catalog_product() -> None:
    catalog = {p.id for p in load_products()}
    for items in default_ads().values():
        for ad in items:
            assert ad.redirect_url.removeprefix("/product/") in catalog


@pytest.mark.parametrize(
    ("keys", "message"),
    [(["kitchen"] * 51, "context_keys"), (["k" * 65], "context key")],
)
async def test_limits_are_invalid_argument(ads: AdClient, keys: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await ads.get_ads(keys)


async def test_limits_themselves_are_accepted(ads: AdClient) -> None:
    assert len(await ads.get_ads(["k" * 64] * 50)) == 2


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(ads: AdClient) -> None:
    address = ads.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.AdService/GetAds")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert products_of(await ads.get_ads(["clothing"])) == [TANK_TOP]
