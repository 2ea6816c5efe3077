"""Checkout over real gRPC against real in-process catalog, cart, currency, shipping, payment and email."""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
import pytest

from boutique.shop import money
from boutique.shop.cart import server as cart_server
from boutique.shop.cart.client import CartClient
from boutique.shop.cart.store import MemoryCartStore
from boutique.shop.checkout.client import CheckoutClient
from boutique.shop.checkout.server import CheckoutClients, bindings
from boutique.shop.currency import server as currency_server
from boutique.shop.currency.client import CurrencyClient
from boutique.shop.email import server as email_server
from boutique.shop.email.client import EmailClient
from boutique.shop.email.service import EmailService
from boutique.shop.errors import InvalidArgument, Reason, Unavailable
from boutique.shop.payment.client import PaymentClient
from boutique.shop.payment.server import PaymentServicer
from boutique.shop.payment.service import Card, PaymentService
from boutique.shop.productcatalog import server as catalog_server
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.rpc import binding
from boutique.shop.shipping.client import ShippingClient
from boutique.shop.shipping.server import ShippingServicer
from boutique.shop.shipping.service import Item, ShippingService
from tests.support import serving

USER = "shopper-1"
EMAIL = "jane.doe@example.com"
VISA = "4111111111111111"
BAD_LUHN = "4111111111111112"
CART = {"66VCHSJNUP": 2, "1YMWWN1N4O": 1, "9SIQT8TOJO": 3}
PRICES_USD = {"66VCHSJNUP": "18.99", "1YMWWN1N4O": "109.99", "9SIQT8TOJO": "5.49"}


def address() -> pb.Address:
    """A complete shipping address."""
    return pb.Address(
        street_address="12 Canal Street", city="Amsterdam", state="NH", country="Netherlands", zip_code=1012
    )


def card(number: str = VISA) -> pb.CreditCardInfo:
    """A card that expires two years from now."""
    return pb.CreditCardInfo(
        credit_card_number=number,
        credit_card_cvv=123,
        credit_card_expiration_year=datetime.date.today().year + 2,
        credit_card_expiration_month=6,
    )


class RecordingShipping(ShippingService):
    """The real shipping service, remembering every shipment it made."""

    def __init__(self) -> None:
        super().__init__()
        self.shipped: list[list[Item]] = []

    async def ship_order(self, address: pb.Address, items: list[Item]) -> str:
        tracking_id = await super().ship_order(address, items)
        self.shipped.append(items)
        return tracking_id


class RecordingPayment(PaymentService):
    """The real payment service, remembering every amount it accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.charged: list[pb.Money] = []

    async def charge(self, amount: pb.Money, card: Card, idempotency_key: str | None = None) -> str:
        transaction_id = await super().charge(amount, card, idempotency_key)
        self.charged.append(amount)
        return transaction_id


@dataclass
class Shop:
    """The running servers, the clients the test uses and the domain objects it inspects."""

    checkout: CheckoutClient
    cart: CartClient
    currency: CurrencyClient
    shipping: RecordingShipping
    payment: RecordingPayment
    email: EmailService
    running: dict[str, AsyncExitStack] = field(default_factory=dict)

    async def stop(self, name: str) -> None:
        """Stop one dependency's server; its address then refuses connections."""
        await self.running.pop(name).aclose()

    async def fill_cart(self, user_id: str = USER) -> None:
        """Put the test cart's lines into the user's cart."""
        for product_id, quantity in CART.items():
            await self.cart.add_item(user_id, product_id, quantity)

    async def cart_of(self, user_id: str = USER) -> dict[str, int]:
        """The user's cart as product id -> quantity."""
        return {item.product_id: item.quantity for item in await self.cart.get_cart(user_id)}


async def serve_dependencies(
    running: dict[str, AsyncExitStack],
    shipping: ShippingService,
    payment: PaymentService,
    email: EmailService,
) -> CheckoutClients:
    """Serve checkout's six dependencies (each stoppable through `running`); clients of them all."""
    servers = {
        "productcatalog": catalog_server.bindings(),
        "cart": cart_server.bindings(MemoryCartStore()),
        "currency": currency_server.bindings(),
        "shipping": [binding("ShippingService", ShippingServicer(shipping))],
        "payment": [binding("PaymentService", PaymentServicer(payment))],
        "email": email_server.bindings(email),
    }
    endpoints = {}
    for name, service_bindings in servers.items():
        running[name] = AsyncExitStack()
        endpoints[name] = await running[name].enter_async_context(serving(name, service_bindings))
    return CheckoutClients(
        CatalogClient(endpoints["productcatalog"]),
        CartClient(endpoints["cart"]),
        CurrencyClient(endpoints["currency"]),
        ShippingClient(endpoints["shipping"]),
        PaymentClient(endpoints["payment"]),
        EmailClient(endpoints["email"]),
    )


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    shipping, payment, email = RecordingShipping(), RecordingPayment(), EmailService()
    running: dict[str, AsyncExitStack] = {}

    async def stop_all() -> None:
        for stack in running.values():
            await stack.aclose()

    async with AsyncExitStack() as stack:
        stack.push_async_callback(stop_all)
        clients = await serve_dependencies(running, shipping, payment, email)
        stack.push_async_callback(clients.close)
        checkout_endpoints = await stack.enter_async_context(serving("checkout", bindings(clients.service())))
        checkout = CheckoutClient(checkout_endpoints)
        stack.push_async_callback(checkout.close)
        yield Shop(checkout, clients.cart, clients.currency, shipping, payment, email, running)


async def place(shop: Shop, **changes: object) -> pb.OrderResult:
    """Place the default order, with some arguments replaced."""
    arguments: dict[str, object] = {
        "user_id": USER,
        "user_currency": "EUR",
        "address": address(),
        "email": EMAIL,
        "card": card(),
    }
    arguments.update(changes)
    return await shop.checkout.place_order(**arguments)  # type: ignore[arg-type]


async def test_full_order_in_eur(shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    await shop.fill_cart()
    with caplog.at_level(logging.INFO):
        order = await place(shop)

    assert uuid.UUID(order.order_id).version == 4
    assert order.shipping_tracking_id
    assert order.shipping_address == address()

    expected_shipping = await shop.currency.convert(money.usd("8.99"), "EUR")
    assert order.shipping_cost == expected_shipping
    assert order.shipping_cost.currency_code == "EUR"
    assert money.to_decimal(order.shipping_cost) != Decimal("8.99")

    assert {line.item.product_id: line.item.quantity for line in order.items} == CART
    expected_total = money.to_decimal(expected_shipping)
    for line in order.items:
        unit = await shop.currency.convert(money.usd(PRICES_USD[line.item.product_id]), "EUR")
        assert line.cost == unit  # per-unit cost in the user's currency
        expected_total += money.to_decimal(unit) * line.item.quantity
    assert len(shop.payment.charged) == 1
    charged = shop.payment.charged[0]
    assert charged.currency_code == "EUR"
    assert money.to_decimal(charged) == expected_total  # exact to the nano

    assert len(shop.shipping.shipped) == 1
    assert await shop.cart_of() == {}

    assert len(shop.email.sent) == 1
    mail = shop.email.sent[-1]
    assert mail.to == EMAIL
    assert order.order_id in mail.html and order.shipping_tracking_id in mail.html
    assert money.display(charged) in mail.html

    summaries = [r for r in caplog.records if r.getMessage() == "order placed"]
    assert len(summaries) == 1
    assert summaries[0].order_id == order.order_id
    assert summaries[0].item_count == sum(CART.values())
    assert summaries[0].currency == "EUR"
    every_line = " ".join(str(vars(r)) for r in caplog.records if r.name.startswith("boutique.shop.checkout"))
    assert VISA not in every_line and EMAIL not in every_line


async def test_declined_card_keeps_the_cart_and_ships_nothing(shop: Shop) -> None:
    await shop.fill_cart()
    with pytest.raises(InvalidArgument, match=r"payment declined: \S"):
        await place(shop, card=card(BAD_LUHN))
    assert shop.shipping.shipped == []
    assert shop.payment.charged == []
    assert await shop.cart_of() == CART
    assert not shop.email.sent


async def test_declined_card_is_invalid_argument_on_the_wire(shop: Shop) -> None:
    await shop.fill_cart()
    address_ = shop.checkout.endpoints.addresses[0]
    request = pb.PlaceOrderRequest(
        user_id=USER, user_currency="EUR", address=address(), email=EMAIL, credit_card=card(BAD_LUHN)
    )
    async with grpc.aio.insecure_channel(address_) as channel:
        raw = channel.unary_unary("/hipstershop.CheckoutService/PlaceOrder")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(request.SerializeToString(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "payment declined" in (info.value.details() or "")
    assert BAD_LUHN not in (info.value.details() or "")


async def test_empty_cart_is_invalid_argument(shop: Shop) -> None:
    with pytest.raises(InvalidArgument, match="cart is empty"):
        await place(shop)
    assert shop.payment.charged == [] and shop.shipping.shipped == []


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_currency": ""}, "user_currency"),
        ({"user_currency": "eur"}, "user_currency"),
        ({"user_currency": "EURO"}, "user_currency"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "jane@localhost"}, "email"),
        ({"address": pb.Address(city="Amsterdam", country="Netherlands")}, "address.street_address"),
        ({"address": pb.Address(street_address="12 Canal Street", country="Netherlands")}, "address.city"),
        ({"address": pb.Address(street_address="12 Canal Street", city="Amsterdam")}, "address.country"),
        ({"card": pb.CreditCardInfo()}, "credit_card"),
    ],
)
async def test_each_invalid_field_is_named(shop: Shop, changes: dict[str, object], field_name: str) -> None:
    await shop.fill_cart()
    with pytest.raises(InvalidArgument, match=field_name):
        await place(shop, **changes)
    assert shop.payment.charged == [] and shop.shipping.shipped == []
    assert await shop.cart_of() == CART


async def test_missing_card_on_the_wire(shop: Shop) -> None:
    await shop.fill_cart()
    request = pb.PlaceOrderRequest(user_id=USER, user_currency="EUR", address=address(), email=EMAIL)
    async with grpc.aio.insecure_channel(shop.checkout.endpoints.addresses[0]) as channel:
        raw = channel.unary_unary("/hipstershop.CheckoutService/PlaceOrder")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(request.SerializeToString(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "credit_card" in (info.value.details() or "")


async def test_unsupported_currency_is_invalid_argument(shop: Shop) -> None:
    await shop.fill_cart()
    with pytest.raises(InvalidArgument, match="user_currency"):
        await place(shop, user_currency="XYZ")
    assert shop.payment.charged == [] and await shop.cart_of() == CART


async def test_email_down_the_order_still_succeeds(shop: Shop) -> None:
    await shop.fill_cart()
    await shop.stop("email")
    order = await place(shop)
    assert order.order_id and order.shipping_tracking_id
    assert len(shop.payment.charged) == 1 and len(shop.shipping.shipped) == 1
    assert await shop.cart_of() == {}
    assert not shop.email.sent


async def test_payment_down_is_unavailable_and_the_cart_is_kept(shop: Shop) -> None:
    await shop.fill_cart()
    await shop.stop("payment")
    with pytest.raises(Unavailable, match="payment"):
        await place(shop)
    assert shop.shipping.shipped == []
    assert await shop.cart_of() == CART
    assert not shop.email.sent


async def test_catalog_down_is_unavailable_naming_it(shop: Shop) -> None:
    await shop.fill_cart()
    await shop.stop("productcatalog")
    with pytest.raises(Unavailable, match="productcatalog"):
        await place(shop)
    assert shop.payment.charged == [] and await shop.cart_of() == CART


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(shop: Shop) -> None:
    async with grpc.aio.insecure_channel(shop.checkout.endpoints.addresses[0]) as channel:
        raw = channel.unary_unary("/hipstershop.CheckoutService/PlaceOrder")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await shop.fill_cart()
    assert (await place(shop)).order_id


async def test_a_lost_payment_reply_is_retried_without_charging_twice(shop: Shop) -> None:
    lost = []

    def lose_first_reply() -> None:
        if not lost:
            lost.append(True)
            raise Unavailable("connection reset after the charge was recorded")

    shop.payment.after_record = lose_first_reply
    await shop.fill_cart()
    order = await place(shop)
    assert lost, "the injected failure happened"
    assert shop.payment.ledger.recorded == 1, "one order, one charge"
    assert shop.payment.ledger.get(order.order_id) is not None, "the order id is the charge's idempotency key"
    assert len(shop.shipping.shipped) == 1


async def test_a_declined_card_says_why_as_data(shop: Shop) -> None:
    await shop.fill_cart()
    with pytest.raises(InvalidArgument) as info:
        await place(shop, card=card(BAD_LUHN))
    error = info.value
    assert error.reason == Reason.PAYMENT_DECLINED
    assert dict(error.failure.metadata) == {"card_problem": Reason.CARD_NUMBER_INVALID}
    assert error.public_message == (
        "payment declined: credit card number is not valid (Luhn check failed): check for typos"
    )
    assert error.failure.dependency_path == () and error.failure.answered
    assert BAD_LUHN not in error.public_message


async def test_an_empty_cart_says_why_as_data(shop: Shop) -> None:
    with pytest.raises(InvalidArgument) as info:
        await place(shop)
    assert (info.value.reason, info.value.public_message) == (Reason.EMPTY_CART, "cart is empty")
