"""Placing orders through the shop's pages: one order per cart-page form, honest pages when checkout
fails or does not answer, and an order status page."""

from __future__ import annotations

import asyncio
import re

import grpc
import pytest

from boutique.shop.checkout import client as checkout_client
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding
from boutique.shop.services import SERVICES
from tests.shop.test_frontend import SUNGLASSES, Shop, add_to_cart, checkout_form, shop
from tests.support import serving

__all__ = ["shop"]  # the fixture, shared with test_frontend

ORDER_ID = re.compile(r'<code class="order-id">([^<]+)</code>')


async def test_one_cart_form_sent_twice_places_one_order(shop: Shop) -> None:
    await add_to_cart(shop, SUNGLASSES, 2)
    fields = await checkout_form(shop)
    assert re.fullmatch(r"[0-9a-f]{32}", fields["order_key"])
    first = await shop.http.post("/cart/checkout", data=fields)
    await add_to_cart(shop, SUNGLASSES, 1)  # even with a full cart again, the same form is the same order
    again = await shop.http.post("/cart/checkout", data=fields)
    assert first.status_code == again.status_code == 200
    assert ORDER_ID.findall(first.text) == ORDER_ID.findall(again.text) != []
    status = await shop.http.get(f"/order/{fields['order_key']}")
    assert status.status_code == 200 and ORDER_ID.findall(status.text) == ORDER_ID.findall(first.text)
    assert (await shop.http.get("/cart")).text.count('class="line"') == 1  # the new line is still there


async def test_an_order_status_is_only_for_its_shopper(shop: Shop) -> None:
    await add_to_cart(shop, SUNGLASSES, 1)
    fields = await checkout_form(shop)
    assert (await shop.http.post("/cart/checkout", data=fields)).status_code == 200
    shop.http.cookies.clear()  # another shopper
    assert (await shop.http.get(f"/order/{fields['order_key']}")).status_code == 404
    assert (await shop.http.get("/order/not-a-key!")).status_code == 404


async def test_payment_down_names_payment_and_the_status_says_not_placed(shop: Shop) -> None:
    await add_to_cart(shop, SUNGLASSES, 1)
    fields = await checkout_form(shop)
    await shop.stop("payment")
    page = await shop.http.post("/cart/checkout", data=fields)
    assert page.status_code == 503
    assert "payment service (needed by checkout)" in page.text
    status = await shop.http.get(f"/order/{fields['order_key']}")
    assert status.status_code == 200 and 'data-outcome="not_placed"' in status.text
    assert "Your cart still holds" in status.text


async def test_checkout_unreachable_places_nothing_and_sends_the_shopper_to_the_status(shop: Shop) -> None:
    await add_to_cart(shop, SUNGLASSES, 1)
    fields = await checkout_form(shop)
    breaker = shop.clients.checkout.dependency.breaker
    assert breaker is not None
    breaker.force_open()  # the mesh refuses the call: nothing reaches checkout
    try:
        page = await shop.http.post("/cart/checkout", data=fields)
    finally:
        breaker.reset()
    # This send placed nothing, but an earlier send of the same form might have: no "not placed" claim.
    assert page.status_code == 503 and page.headers["retry-after"] == "3"
    assert 'data-outcome="unreachable"' in page.text
    assert f'href="/order/{fields["order_key"]}"' in page.text
    status = await shop.http.get(f"/order/{fields['order_key']}")
    assert status.status_code == 200 and 'data-outcome="not_placed"' in status.text
    assert "No order was placed. Nothing was charged." in status.text
    placed = await shop.http.post("/cart/checkout", data=fields)  # checkout reachable again: the same form
    assert placed.status_code == 200 and 'class="order-id"' in placed.text


class SlowCheckout:
    """A checkout that answers PlaceOrder only after its callers have given up."""

    def __init__(self) -> None:
        self.calls = 0

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        await asyncio.sleep(5)

    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        return pb.GetOrderResponse(state=pb.ORDER_STATE_PLACING)


async def test_no_answer_from_checkout_says_the_outcome_is_unknown_and_links_the_status(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkout_client, "PLACE_ORDER_TIMEOUT", 1.0)
    await add_to_cart(shop, SUNGLASSES, 1)
    fields = await checkout_form(shop)
    slow = SlowCheckout()
    async with serving("checkout", [binding("CheckoutService", slow)]) as endpoints:
        shop.clients.checkout.dependency.update(  # point the frontend's checkout client at the slow one
            [_instance("checkout-slow", endpoints.addresses[0])]
        )
        page = await shop.http.post("/cart/checkout", data=fields)
        assert page.status_code == 504
        assert 'data-outcome="unknown"' in page.text
        assert f'href="/order/{fields["order_key"]}"' in page.text
        assert "Please do not order again" in page.text
        assert slow.calls == 1  # a call that may have placed the order is not sent again elsewhere
        status = await shop.http.get(f"/order/{fields['order_key']}")
        assert status.status_code == 202 and 'data-outcome="placing"' in status.text


def _instance(instance_id: str, address: str):  # type: ignore[no-untyped-def]
    from boutique.mesh.instance import Instance

    host, _, port = address.rpartition(":")
    return Instance(SERVICES["checkout"].name, instance_id, host, {"grpc": int(port)})
