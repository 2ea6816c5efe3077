"""Shipping over real gRPC: flat quotes, tracking ids and validation of every field."""

from __future__ import annotations

import re

import grpc
import pytest

from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.shipping.client import ShippingClient
from boutique.shop.shipping.server import bindings
from tests.support import serving

TRACKING_ID = re.compile(r"SH(-[0-9A-HJKMNP-TV-Z]{4}){3}")
ADDRESS = pb.Address(
    street_address="1600 Amphitheatre Parkway",
    city="Mountain View",
    state="CA",
    country="USA",
    zip_code=94043,
)
ITEMS = [pb.CartItem(product_id="OLJCESPC7Z", quantity=2), pb.CartItem(product_id="6E92ZMYYFZ", quantity=1)]


@pytest.fixture
async def shipping():
    async with serving("shipping", bindings()) as endpoints:
        client = ShippingClient(endpoints)
        yield client
        await client.close()


def with_fields(**fields: object) -> pb.Address:
    """The sample address with some fields replaced."""
    address = pb.Address()
    address.CopyFrom(ADDRESS)
    for name, value in fields.items():
        setattr(address, name, value)
    return address


async def test_quote_is_flat_8_99_usd_for_any_non_empty_cart(shipping: ShippingClient) -> None:
    for items in (ITEMS, ITEMS[:1], [pb.CartItem(product_id="1YMWWN1N4O", quantity=10)] * 5):
        cost = await shipping.get_quote(ADDRESS, items)
        assert (cost.currency_code, cost.units, cost.nanos) == ("USD", 8, 990_000_000)
    # A quote needs no address yet: the cart page asks before the shopper typed one.
    cost = await shipping.get_quote(pb.Address(), ITEMS)
    assert (cost.units, cost.nanos) == (8, 990_000_000)


async def test_quote_is_zero_without_units(shipping: ShippingClient) -> None:
    for items in ([], [pb.CartItem(product_id="OLJCESPC7Z", quantity=0)]):
        cost = await shipping.get_quote(ADDRESS, items)
        assert (cost.currency_code, cost.units, cost.nanos) == ("USD", 0, 0)


async def test_quote_rejects_bad_items(shipping: ShippingClient) -> None:
    with pytest.raises(InvalidArgument, match=r"items\[0\].quantity -1"):
        await shipping.get_quote(ADDRESS, [pb.CartItem(product_id="OLJCESPC7Z", quantity=-1)])
    with pytest.raises(InvalidArgument, match=r"items\[1\].product_id is empty"):
        await shipping.get_quote(ADDRESS, [ITEMS[0], pb.CartItem(quantity=1)])


async def test_ship_order_returns_a_tracking_id(shipping: ShippingClient) -> None:
    tracking_id = await shipping.ship_order(ADDRESS, ITEMS)
    assert TRACKING_ID.fullmatch(tracking_id), tracking_id
    # zip code 0 and an empty state are acceptable (not every country has them)
    assert TRACKING_ID.fullmatch(await shipping.ship_order(with_fields(zip_code=0, state=""), ITEMS))


async def test_tracking_ids_are_unique_over_1000_calls(shipping: ShippingClient) -> None:
    ids = [await shipping.ship_order(ADDRESS, ITEMS) for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(TRACKING_ID.fullmatch(tracking_id) for tracking_id in ids)
    # the random part uses the whole alphabet, not a fixed pattern
    assert len({char for tracking_id in ids for char in tracking_id[3:].replace("-", "")}) == 32


@pytest.mark.parametrize(
    ("address", "items", "message"),
    [
        (with_fields(street_address=""), ITEMS, "address.street_address is empty"),
        (with_fields(street_address="   "), ITEMS, "address.street_address is empty"),
        (with_fields(city=""), ITEMS, "address.city is empty"),
        (with_fields(country=""), ITEMS, "address.country is empty"),
        (with_fields(zip_code=-1), ITEMS, "address.zip_code -1"),
        (pb.Address(), ITEMS, "address.street_address is empty"),
        (ADDRESS, [], "items is empty"),
        (ADDRESS, [pb.CartItem(product_id="OLJCESPC7Z", quantity=0)], r"items\[0\].quantity 0"),
        (ADDRESS, [ITEMS[0], pb.CartItem(product_id="OLJCESPC7Z", quantity=-3)], r"items\[1\].quantity -3"),
        (ADDRESS, [pb.CartItem(product_id="", quantity=1)], r"items\[0\].product_id is empty"),
    ],
)
async def test_ship_order_validation_is_invalid_argument(
    shipping: ShippingClient, address: pb.Address, items: list[pb.CartItem], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await shipping.ship_order(address, items)


async def test_validation_errors_carry_the_invalid_argument_status(shipping: ShippingClient) -> None:
    address = shipping.endpoints.addresses[0]
    request = pb.ShipOrderRequest(address=with_fields(city=""), items=ITEMS)
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.ShippingService/ShipOrder")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(request.SerializeToString(), timeout=2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "city" in (info.value.details() or "")


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(shipping: ShippingClient) -> None:
    address = shipping.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        for method in ("GetQuote", "ShipOrder"):
            raw = channel.unary_unary(f"/hipstershop.ShippingService/{method}")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert TRACKING_ID.fullmatch(await shipping.ship_order(ADDRESS, ITEMS))
