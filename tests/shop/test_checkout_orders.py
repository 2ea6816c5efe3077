"""Orders as a saga over real gRPC: idempotent by order key, undone when they cannot finish, recovered
after a crash, and nothing done after the caller's deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from boutique.mesh.errors import DeadlineExceeded
from boutique.shop.cart.client import CartClient
from boutique.shop.checkout.client import CheckoutClient
from boutique.shop.checkout.server import bindings
from boutique.shop.checkout.service import CheckoutService
from boutique.shop.checkout.store import OrderJournal, Step
from boutique.shop.email.service import EmailService
from boutique.shop.errors import Aborted, InvalidArgument, Reason, Unavailable
from boutique.shop.payment.service import PaymentService
from boutique.shop.payment.store import ChargeLedger
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.shipping.service import Item, ShippingService
from tests.shop.test_checkout import CART, EMAIL, USER, address, card, serve_dependencies
from tests.support import serving


class ControlledShipping(ShippingService):
    """The real shipping service, which a test can make fail or stall, remembering every shipment."""

    def __init__(self) -> None:
        super().__init__()
        self.shipped: list[str] = []
        self.fail = False
        self.stall = 0.0

    async def ship_order(self, address: pb.Address, items: list[Item]) -> str:
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.fail:
            raise Unavailable("the warehouse is closed")
        tracking_id = await super().ship_order(address, items)
        self.shipped.append(tracking_id)
        return tracking_id


@dataclass
class Orders:
    """A checkout over real servers, with its journal, the payment ledger and the outbox to inspect."""

    checkout: CheckoutClient
    service: CheckoutService
    cart: CartClient
    shipping: ControlledShipping
    payment: PaymentService
    email: EmailService
    journal: OrderJournal

    async def fill_cart(self) -> None:
        for product_id, quantity in CART.items():
            await self.cart.add_item(USER, product_id, quantity)

    async def place(self, key: str | None, **changes: object) -> pb.OrderResult:
        arguments: dict[str, object] = {
            "user_id": USER, "user_currency": "EUR", "address": address(), "email": EMAIL, "card": card(),
        }  # fmt: skip
        arguments.update(changes)
        return await self.checkout.place_order(order_key=key, **arguments)  # type: ignore[arg-type]

    def charges(self) -> list[tuple[str, str]]:
        """(idempotency key, state) of every charge record."""
        return [(e.key, e.state) for e in self.payment.ledger.entries()]


@pytest.fixture
async def orders(tmp_path: Path) -> AsyncIterator[Orders]:
    shipping = ControlledShipping()
    payment = PaymentService(ledger=ChargeLedger(tmp_path / "ledger.sqlite"))
    email = EmailService(tmp_path / "outbox")
    journal = OrderJournal(tmp_path / "orders.sqlite", owner="checkout-test")
    running: dict[str, AsyncExitStack] = {}
    async with AsyncExitStack() as stack:
        stack.push_async_callback(lambda: asyncio.gather(*(r.aclose() for r in running.values())))
        clients = await serve_dependencies(running, shipping, payment, email)
        stack.push_async_callback(clients.close)
        service = clients.service(journal)
        checkout = CheckoutClient(await stack.enter_async_context(serving("checkout", bindings(service))))
        stack.push_async_callback(checkout.close)
        yield Orders(checkout, service, clients.cart, shipping, payment, email, journal)


async def test_the_same_order_key_places_one_order(orders: Orders) -> None:
    await orders.fill_cart()
    first = await orders.place("key-1")
    await orders.fill_cart()  # a full cart again: a second order would be possible
    again = await orders.place("key-1")
    assert again == first
    assert orders.charges() == [(first.order_id, "charged")]
    assert len(orders.shipping.shipped) == 1 and len(list(orders.email.outbox_dir.glob("*.html"))) == 1  # type: ignore[union-attr]


async def test_a_double_submit_places_one_order(orders: Orders) -> None:
    await orders.fill_cart()
    orders.shipping.stall = 0.3
    results = await asyncio.gather(orders.place("key-2"), orders.place("key-2"), return_exceptions=True)
    placed = [r for r in results if isinstance(r, pb.OrderResult)]
    assert len(placed) == 1 and isinstance(next(r for r in results if r not in placed), Aborted)
    assert len(orders.charges()) == 1 and len(orders.shipping.shipped) == 1
    status = await orders.checkout.get_order("key-2", USER)
    assert status.state == pb.ORDER_STATE_PLACED and status.order == placed[0]


async def test_a_shipment_that_fails_after_the_charge_voids_the_charge(orders: Orders) -> None:
    await orders.fill_cart()
    orders.shipping.fail = True
    with pytest.raises(Unavailable, match="shipping") as info:
        await orders.place("key-3")
    assert info.value.dependency_path == ("checkout", "shipping")
    ((charge_key, state),) = orders.charges()
    assert state == "voided"
    status = await orders.checkout.get_order("key-3", USER)
    assert status.state == pb.ORDER_STATE_NOT_PLACED and "voided" in status.message
    assert {i.product_id: i.quantity for i in await orders.cart.get_cart(USER)} == CART
    orders.shipping.fail = False  # the shopper tries again with the same form: a new attempt
    placed = await orders.place("key-3")
    assert placed.order_id != charge_key
    assert sorted(state for _, state in orders.charges()) == ["charged", "voided"]


async def test_too_little_time_left_charges_nothing(orders: Orders) -> None:
    await orders.fill_cart()
    arguments = {"user_id": USER, "user_currency": "EUR", "address": address(), "email": EMAIL}
    request = pb.PlaceOrderRequest(**arguments, credit_card=card())  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="ran out of time"):
        await orders.checkout._call("PlaceOrder", request, timeout=0.6, metadata=(("idempotency-key", "k4"),))
    await asyncio.sleep(0.2)
    assert orders.charges() == [] and orders.shipping.shipped == []
    assert (await orders.checkout.get_order("k4", USER)).state == pb.ORDER_STATE_NOT_PLACED


async def test_a_caller_that_gives_up_mid_order_gets_no_shipment_and_its_charge_voided(
    orders: Orders,
) -> None:
    await orders.fill_cart()
    orders.shipping.stall = 2.0  # the caller's deadline runs out while shipping stalls
    with pytest.raises(Unavailable):
        await orders.checkout._call(
            "PlaceOrder",
            pb.PlaceOrderRequest(
                user_id=USER, user_currency="EUR", address=address(), email=EMAIL, credit_card=card()
            ),
            timeout=1.5,
            metadata=(("idempotency-key", "k5"),),
        )

    for _ in range(100):  # the order ends on checkout's own time, after the caller left
        if [state for _, state in orders.charges()] == ["voided"]:
            break
        await asyncio.sleep(0.1)
    assert (await orders.checkout.get_order("k5", USER)).state == pb.ORDER_STATE_NOT_PLACED
    assert orders.shipping.shipped == []  # the shipping service refused: its caller's deadline had passed
    assert [state for _, state in orders.charges()] == ["voided"]


async def test_an_order_left_open_by_a_dead_checkout_is_recovered(orders: Orders) -> None:
    journal = orders.journal
    request = pb.PlaceOrderRequest(user_id=USER, user_currency="EUR", address=address(), email=EMAIL)
    # A checkout that charged and died: its claim's lease has run out.
    _, charged = journal.claim("dead-1", "order-dead-1", USER, request.SerializeToString(), lease=-1)
    journal.advance(charged, Step.CHARGED, transaction_id="t-1")
    await orders.payment.charge(pb.Money(currency_code="EUR", units=10), _card(), "order-dead-1")
    # One that shipped and died before emptying the cart and mailing.
    await orders.fill_cart()
    _, shipped = journal.claim("dead-2", "order-dead-2", USER, request.SerializeToString(), lease=-1)
    result = pb.OrderResult(order_id="order-dead-2", shipping_tracking_id="TR-1", shipping_address=address())
    journal.advance(shipped, Step.SHIPPED, result=result.SerializeToString(), lease=-1)
    # One that died after claiming: its charge request may still be on the way.
    journal.claim("dead-3", "order-dead-3", USER, request.SerializeToString(), lease=-1)

    assert await orders.service.recover() == 3
    states = dict(orders.charges())
    assert states["order-dead-1"] == "voided" and states["order-dead-3"] == "voided"
    with pytest.raises(Exception, match="voided"):  # the charge still on its way is refused for good
        await orders.payment.charge(pb.Money(currency_code="EUR", units=10), _card(), "order-dead-3")
    assert (await orders.checkout.get_order("dead-2", USER)).state == pb.ORDER_STATE_PLACED
    assert await orders.cart.get_cart(USER) == []
    assert (orders.email.outbox_dir / "order-dead-2.html").exists()  # type: ignore[operator]
    for key in ("dead-1", "dead-3"):
        assert (await orders.checkout.get_order(key, USER)).state == pb.ORDER_STATE_NOT_PLACED
    assert await orders.service.recover() == 0


async def test_the_status_of_an_order_is_only_for_its_shopper(orders: Orders) -> None:
    await orders.fill_cart()
    await orders.place("key-6")
    assert (await orders.checkout.get_order("key-6", "someone-else")).state == pb.ORDER_STATE_UNSPECIFIED
    never = await orders.checkout.get_order("never-used", USER)  # nothing was, or will be, placed under it
    assert never.state == pb.ORDER_STATE_NOT_PLACED and "Nothing was charged" in never.message
    with pytest.raises(InvalidArgument, match="order key"):
        await orders.checkout.get_order("x" * 200, USER)


async def test_the_ledger_survives_a_restart_and_a_void_blocks_a_late_charge(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = PaymentService(ledger=ChargeLedger(path))
    transaction = await first.charge(pb.Money(currency_code="USD", units=5), _card(), "order-a")
    assert await first.refund("order-b") == (False, "")  # void before the charge arrives
    first.ledger.close()
    second = PaymentService(ledger=ChargeLedger(path))
    assert await second.charge(pb.Money(currency_code="USD", units=5), _card(), "order-a") == transaction
    with pytest.raises(Exception, match="voided"):
        await second.charge(pb.Money(currency_code="USD", units=5), _card(), "order-b")
    assert await second.refund("order-a") == (True, transaction)
    assert await second.refund("order-a") == (True, transaction)  # idempotent
    assert [(e.key, e.state) for e in second.ledger.entries()] == [
        ("order-a", "voided"),
        ("order-b", "voided"),
    ]


async def test_services_refuse_side_effects_once_the_deadline_has_passed() -> None:
    from boutique.mesh import deadline

    with deadline.deadline_in(0.01):
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            await ShippingService().ship_order(address(), [Item("OLJCESPC7Z", 1)])
        with pytest.raises(DeadlineExceeded):
            await PaymentService().charge(pb.Money(currency_code="USD", units=1), _card(), "k")


def _card():  # type: ignore[no-untyped-def]
    from boutique.shop.payment.server import to_card

    return to_card(card())


async def test_an_expired_call_is_refused_before_the_handler_runs(orders: Orders) -> None:
    calls = []
    original = orders.shipping.get_quote

    async def counting(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return await original(*args)

    orders.shipping.get_quote = counting  # type: ignore[method-assign]
    target = orders.service.shipping.endpoints.addresses[0]  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(target) as channel:
        quote = channel.unary_unary(
            "/hipstershop.ShippingService/GetQuote",
            request_serializer=pb.GetQuoteRequest.SerializeToString,
            response_deserializer=pb.GetQuoteResponse.FromString,
        )
        past = str(int((time.time() - 1) * 1000))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await quote(
                pb.GetQuoteRequest(address=address()), timeout=5, metadata=(("x-deadline-unix-ms", past),)
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "passed" in (info.value.details() or "")
        assert calls == []
        future = str(int((time.time() + 5) * 1000))
        await quote(
            pb.GetQuoteRequest(address=address()), timeout=5, metadata=(("x-deadline-unix-ms", future),)
        )
        assert calls == [1]


async def test_a_declined_order_is_journaled_with_its_reason(orders: Orders) -> None:
    await orders.fill_cart()
    expired = pb.CreditCardInfo(
        credit_card_number="4111111111111111",
        credit_card_cvv=123,
        credit_card_expiration_year=2020,
        credit_card_expiration_month=1,
    )
    with pytest.raises(InvalidArgument) as info:
        await orders.place("key-declined", card=expired)
    assert info.value.reason == Reason.PAYMENT_DECLINED
    assert dict(info.value.failure.metadata) == {"card_problem": Reason.CARD_EXPIRED}
    record = orders.journal.get("key-declined")
    assert record is not None and (record.step, record.reason) == (Step.FAILED, Reason.PAYMENT_DECLINED)
    status = await orders.checkout.get_order("key-declined", USER)
    assert status.state == pb.ORDER_STATE_NOT_PLACED
    assert status.message == "The payment declined: card expired 01/2020. Nothing was charged."
    assert orders.charges() == []
