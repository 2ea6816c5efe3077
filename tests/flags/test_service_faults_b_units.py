"""The cart, payment, checkout, shipping and readiness flags in this process: the service code with a flag
file installed, real gRPC servers and a real registry where they take part (no `boutique up`)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.flags import FlagFile
from boutique.mesh import GrpcServer, ProcessInfo, deadline
from boutique.mesh.discovery import Registrar, RegistryResolver
from boutique.mesh.errors import DeadlineExceeded
from boutique.mesh.flags import flags
from boutique.mesh.instance import Instance
from boutique.mesh.presence import Presence
from boutique.mesh.registry import RegistryServer
from boutique.mesh.runtime import Mesh
from boutique.mesh.settings import DiscoverySettings, MeshSettings, StatusSettings
from boutique.shop.cart.server import bindings as cart_bindings
from boutique.shop.cart.service import CartService
from boutique.shop.cart.store import MemoryCartStore
from boutique.shop.checkout.service import CheckoutService
from boutique.shop.checkout.store import OrderJournal, Step
from boutique.shop.checkout.unreachable import UnreachablePayment, silent_address
from boutique.shop.errors import Reason, Unavailable
from boutique.shop.payment.service import Card, PaymentService
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.shipping.service import QUOTE_WORK_SECONDS, Item, ShippingService, is_domestic, pause
from tests.e2e.harness import eventually

VISA = Card(number="4111111111111111", cvv=123, expiration_year=2099, expiration_month=6)
ABROAD = pb.Address(street_address="Damrak 1", city="Amsterdam", country="Netherlands", zip_code=1012)
HOME = pb.Address(street_address="1 Main St", city="Springfield", country="U.S.A.", zip_code=12345)
ITEMS = [Item("OLJCESPC7Z", 1)]


def switch_here(file: FlagFile, flag: str, variant: str, expected: float) -> None:
    """Set the flag and wait until this process reads `expected` for it."""
    file.set(flag, variant, by="test")
    eventually(lambda: flags().number(flag) == expected, f"{flag}={variant}", timeout=10, every=0.05)


# ---- cart ------------------------------------------------------------------------------------------


async def test_cart_failure_fails_the_drawn_share_of_empties_and_leaves_the_cart(flag_file: FlagFile) -> None:
    draws = iter([0.3, 0.1, 0.99])
    service = CartService(MemoryCartStore(), draw=lambda: next(draws))
    await service.add_item("ann", "OLJCESPC7Z", 2)
    await service.empty_cart("ann")  # off: never draws
    await service.add_item("ann", "OLJCESPC7Z", 2)
    switch_here(flag_file, "cartFailure", "25%", 0.25)
    await service.empty_cart("ann")  # draws 0.3: not one of the 25 %
    await service.add_item("ann", "OLJCESPC7Z", 2)
    with pytest.raises(Unavailable) as failed:
        await service.empty_cart("ann")  # draws 0.1
    assert failed.value.reason == Reason.FAULT_INJECTED
    assert failed.value.failure.metadata == {"flag": "cartFailure"}
    assert [(line.product_id, line.quantity) for line in await service.get_cart("ann")] == [("OLJCESPC7Z", 2)]
    switch_here(flag_file, "cartFailure", "100%", 1.0)
    with pytest.raises(Unavailable):
        await service.empty_cart("ann")  # draws 0.99: still below 1.0


# ---- payment ---------------------------------------------------------------------------------------


async def test_payment_failure_fails_before_anything_is_charged(flag_file: FlagFile, spans: Any) -> None:
    tracer, exporter = spans
    service = PaymentService(draw=lambda: 0.05)
    amount = pb.Money(currency_code="USD", units=10)
    switch_here(flag_file, "paymentFailure", "10%", 0.1)
    with tracer.start_as_current_span("Charge"), pytest.raises(Unavailable) as failed:
        await service.charge(amount, VISA, idempotency_key="order-1")
    assert failed.value.reason == Reason.FAULT_INJECTED and failed.value.public_message
    assert service.ledger.get("order-1") is None, "a failed charge left a charge behind"
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["feature_flag.key"] == "paymentFailure"
    service.draw = lambda: 0.5  # not one of the 10 %
    assert await service.charge(amount, VISA, idempotency_key="order-1")


# ---- checkout --------------------------------------------------------------------------------------


class Fakes:
    """Checkout's six dependencies in memory; the cart fails to empty."""

    def __init__(self) -> None:
        self.charges: list[str] = []
        self.cart_lines = [pb.CartItem(product_id="OLJCESPC7Z", quantity=1)]

    async def get_product(self, product_id: str) -> pb.Product:
        return pb.Product(id=product_id, price_usd=pb.Money(currency_code="USD", units=19))

    async def get_cart(self, user_id: str) -> list[pb.CartItem]:
        return list(self.cart_lines)

    async def empty_cart(self, user_id: str) -> None:
        raise Unavailable("cart: EmptyCart failed on purpose", reason=Reason.FAULT_INJECTED)

    async def convert(self, money: pb.Money, to_code: str) -> pb.Money:
        return money

    async def get_quote(self, address: pb.Address, items: list[pb.CartItem]) -> pb.Money:
        return pb.Money(currency_code="USD", units=8)

    async def ship_order(self, address: pb.Address, items: list[pb.CartItem]) -> str:
        return "SH-TEST-0000-0001"

    async def charge(
        self, amount: pb.Money, card: pb.CreditCardInfo, idempotency_key: str | None = None
    ) -> str:
        self.charges.append(str(idempotency_key))
        return "tx-1"

    async def refund(self, idempotency_key: str) -> tuple[bool, str]:
        return False, ""

    async def send_order_confirmation(self, email: str, order: pb.OrderResult) -> None:
        return None


async def test_an_order_whose_cart_cannot_be_emptied_is_placed_and_says_so(spans: Any) -> None:
    tracer, exporter = spans
    fakes = Fakes()
    journal = OrderJournal()
    service = CheckoutService(fakes, fakes, fakes, fakes, fakes, fakes, journal)
    card = pb.CreditCardInfo(credit_card_number="4111111111111111", credit_card_cvv=123)
    with tracer.start_as_current_span("PlaceOrder"):
        order = await service.place_order("ann", "USD", ABROAD, "ann@example.com", card, order_key="key-1")
    assert order.order_id and fakes.charges == [order.order_id]
    record = journal.get("key-1")
    assert record is not None and record.step is Step.PLACED
    assert "cart could not be emptied" in record.message
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["app.cart.emptied"] is False
    assert "cart_not_emptied" in [event.name for event in span.events]
    again = await service.place_order("ann", "USD", ABROAD, "ann@example.com", card, order_key="key-1")
    assert again.order_id == order.order_id and fakes.charges == [order.order_id]  # charged once


async def test_the_unreachable_payment_refuses_at_once_and_is_listed_in_the_mesh() -> None:
    held, address = silent_address()
    with pytest.raises(ConnectionRefusedError):  # bound, never listening: refused, and the port stays ours
        socket.create_connection(tuple(address.split(":")), timeout=2)  # type: ignore[arg-type]
    held.close()
    mesh = Mesh("checkout")
    flag = {"on": True}
    unreachable = UnreachablePayment(mesh, lambda: flag["on"], every=0.05)
    client = unreachable()
    assert unreachable() is client and "payment-unreachable" in mesh.dependencies
    with pytest.raises(Unavailable) as failed:
        await client.charge(pb.Money(currency_code="USD", units=1), pb.CreditCardInfo(), "order-2")
    assert failed.value.failure.code is grpc.StatusCode.UNAVAILABLE
    assert failed.value.dependency_path == ("payment",)  # the shopper is told payment failed
    snapshot = mesh.snapshot()
    assert snapshot[0]["breaker"]["name"] == "checkout->payment-unreachable"
    flag["on"] = False  # switched off: the dependency leaves the mesh with no charge coming along
    for _ in range(100):
        if "payment-unreachable" not in mesh.dependencies:
            break
        await asyncio.sleep(0.05)
    assert "payment-unreachable" not in mesh.dependencies
    assert unreachable() is not client  # on again: a fresh client
    await unreachable.close()
    assert "payment-unreachable" not in mesh.dependencies


# ---- shipping --------------------------------------------------------------------------------------


def test_the_us_is_recognised_however_it_is_written() -> None:
    for country in (
        "US",
        "us",
        "U.S.",
        "USA",
        "u.s.a.",
        "United States",
        " united  states ",
        "United States of America",
    ):
        assert is_domestic(country), country
    for country in ("Netherlands", "Germany", "USSR", "Australia", ""):
        assert not is_domestic(country), country


async def test_a_pause_never_outlasts_the_callers_deadline() -> None:
    with deadline.deadline_in(0.05), pytest.raises(DeadlineExceeded, match="ran out"):
        await pause(30.0, "test pause")
    with deadline.deadline_in(5.0):
        await pause(0.01, "short pause")  # fits: no error


async def test_international_quotes_wait_the_flag_and_stop_at_the_deadline(
    flag_file: FlagFile, spans: Any
) -> None:
    tracer, exporter = spans
    service = ShippingService()
    switch_here(flag_file, "intlShippingSlowdown", "5sec", 5.0)
    with tracer.start_as_current_span("home"):
        assert (await service.get_quote(HOME, ITEMS)).units == 8  # at home: no delay, no flag on the span
    with tracer.start_as_current_span("abroad"), deadline.deadline_in(0.5), pytest.raises(DeadlineExceeded):
        await service.get_quote(ABROAD, ITEMS)
    home, abroad = exporter.get_finished_spans()
    assert home.attributes is not None and "feature_flag.key" not in home.attributes
    assert abroad.attributes is not None and abroad.attributes["feature_flag.key"] == "intlShippingSlowdown"
    assert abroad.attributes["app.shipping.delay_ms"] == 5000
    assert [event.name for event in abroad.events][-1] == "delay cut short by the caller's deadline"


async def test_the_worker_pool_lets_one_quote_work_at_a_time(flag_file: FlagFile, spans: Any) -> None:
    tracer, exporter = spans
    service = ShippingService()
    switch_here(flag_file, "shippingWorkerPool", "1", 1.0)
    working = 0
    most = 0
    real_pause = pause

    async def quote(number: int) -> None:
        with tracer.start_as_current_span(f"quote {number}"):
            await service.get_quote(HOME, ITEMS)

    async def counting_pause(seconds: float, what: str) -> None:
        nonlocal working, most
        working += 1
        most = max(most, working)
        try:
            await real_pause(seconds, what)
        finally:
            working -= 1

    import boutique.shop.shipping.service as shipping

    shipping.pause = counting_pause  # type: ignore[assignment]
    try:
        await asyncio.gather(*(quote(n) for n in range(4)))
    finally:
        shipping.pause = real_pause  # type: ignore[assignment]
    assert most == 1, f"{most} quotes worked at once with one worker"
    recorded = sorted(exporter.get_finished_spans(), key=lambda s: s.name)
    queued = [bool(s.attributes and s.attributes["app.pool.queued"]) for s in recorded]
    assert queued == [False, True, True, True]
    assert all(s.attributes and s.attributes["app.pool.size"] == 1 for s in recorded)
    waits = [float(s.attributes["app.pool.wait_ms"]) for s in recorded if s.attributes]
    print(
        f"\nwaits with one worker and {QUOTE_WORK_SECONDS * 1000:.0f} ms quotes: {[round(w) for w in waits]} ms"
    )


# ---- readiness: health, the registry's view and callers' watches ------------------------------------


async def health_of(port: int) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def health_becomes(port: int, expected: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeout
    while await health_of(port) != expected:
        assert loop.time() < ends, f"health never became {expected}"
        await asyncio.sleep(0.05)


async def next_set(watch: Any) -> list[str]:
    """The ids of the next instance set the watch yields."""
    return [instance.id for instance in await asyncio.wait_for(anext(watch), 10)]


async def test_an_unready_server_is_critical_in_the_registry_and_out_of_callers_watches(
    registry: RegistryServer,
) -> None:
    settings = MeshSettings(
        discovery=DiscoverySettings(registry_url=registry.url), status=StatusSettings(enabled=False)
    )
    ready = {"now": True}
    server = GrpcServer(
        ProcessInfo(service="cart", instance_id="cart-r"),
        cart_bindings(MemoryCartStore()),
        grace=0.2,
        mesh=Mesh("cart", settings),
        register=True,
        settings=settings,
        readiness=lambda: ready["now"],
        readiness_period=0.05,
    )
    port = await server.start()
    await server.presence.announce({"grpc": port})
    server.follow_readiness()
    resolver = RegistryResolver(registry.url, wait=5.0)
    watch = resolver.watch("cart")
    try:
        assert await next_set(watch) == ["cart-r"]
        ready["now"] = False
        await health_becomes(port, "NOT_SERVING")
        assert await next_set(watch) == []  # the registry's check marked it critical: callers see none
        listed, _ = registry.state.instances("cart", any_status=True)
        assert [(i.id, i.status) for i in listed] == [("cart-r", "critical")]  # still listed, unready
        ready["now"] = True
        await health_becomes(port, "SERVING")
        assert await next_set(watch) == ["cart-r"]
    finally:
        await watch.aclose()
        await resolver.close()
        await server.stop()
        await server.presence.close()


class RecordingRegistrar(Registrar):
    """A backend without health checks (as etcd is): what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def register(self, instance: Instance, ttl: float) -> None:
        self.calls.append(f"register {instance.id}")

    async def deregister(self) -> None:
        self.calls.append("deregister")


async def test_without_registry_checks_an_unready_server_deregisters_until_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recording = RecordingRegistrar()
    monkeypatch.setattr("boutique.mesh.presence.registrar_for", lambda settings: recording)
    presence = Presence(
        ProcessInfo(service="cart", instance_id="cart-e"),
        register=True,
        settings=MeshSettings(status=StatusSettings(enabled=False)),
        health_check={"type": "grpc", "port": "grpc", "interval": 1.0},
    )
    await presence.set_ready(False)  # unready before it is announced: not registered at all
    await presence.announce({"grpc": 1234})
    await presence.set_ready(True)
    await presence.set_ready(False)
    await presence.set_ready(True)
    assert recording.calls == ["register cart-e", "deregister", "register cart-e"]
