"""Translation of failed calls into the shop's errors, read from the Failure (never from message text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import grpc
import pytest

from boutique.mesh import CircuitOpen, NoInstances, StaticEndpoints
from boutique.mesh.errors import DeadlineExceeded
from boutique.mesh.failure import STATUS_DETAILS
from boutique.shop.currency import server as currency_server
from boutique.shop.currency.client import CurrencyClient
from boutique.shop.errors import (
    InvalidArgument,
    NotFound,
    Reason,
    ShopError,
    Unavailable,
    from_failed_call,
    translating,
)
from boutique.shop.payment.client import PaymentClient
from boutique.shop.payment.server import bindings as payment_bindings
from boutique.shop.payment.service import PaymentService
from boutique.shop.productcatalog import server as catalog_server
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from tests.support import serving

TODAY = date(2026, 3, 15)
VISA = "4111111111111111"


def card(year: int, month: int) -> pb.CreditCardInfo:
    """The test VISA card with this expiry."""
    return pb.CreditCardInfo(
        credit_card_number=VISA,
        credit_card_cvv=123,
        credit_card_expiration_year=year,
        credit_card_expiration_month=month,
    )


def usd(units: int) -> pb.Money:
    """Whole US dollars."""
    return pb.Money(currency_code="USD", units=units)


@pytest.fixture
async def payment() -> AsyncIterator[tuple[PaymentClient, StaticEndpoints]]:
    """A payment server judging expiry by a fixed date, and a client of it."""
    async with serving("payment", payment_bindings(PaymentService(today=lambda: TODAY))) as endpoints:
        client = PaymentClient(endpoints)
        yield client, endpoints
        await client.close()


async def test_a_card_problem_arrives_with_its_reason_and_public_message(
    payment: tuple[PaymentClient, StaticEndpoints],
) -> None:
    client, _ = payment
    with pytest.raises(InvalidArgument) as info:
        await client.charge(usd(10), card(2025, 1))
    error = info.value
    assert error.reason == Reason.CARD_EXPIRED and error.public_message == "card expired 01/2025"
    failure = error.failure
    assert failure.code is grpc.StatusCode.INVALID_ARGUMENT and failure.answered and not failure.retryable
    assert failure.dependency_path == (), "a card problem is the caller's, not payment's fault"
    assert failure.detail == "card expired 01/2025" and str(error) == "payment: card expired 01/2025"

    with pytest.raises(InvalidArgument) as info:
        await client.charge(usd(10), pb.CreditCardInfo(credit_card_number="3782 822463 10005"))
    assert info.value.reason == Reason.CARD_TYPE_NOT_ACCEPTED
    assert "American Express" in info.value.public_message


async def test_an_error_without_a_reason_sends_no_details(
    payment: tuple[PaymentClient, StaticEndpoints],
) -> None:
    client, endpoints = payment
    with pytest.raises(InvalidArgument) as info:
        await client.charge(pb.Money(currency_code="usd", units=1), card(2027, 1))
    assert (info.value.reason, info.value.public_message) == ("", "")
    assert info.value.failure.detail.startswith("amount currency code")
    async with grpc.aio.insecure_channel(endpoints.addresses[0]) as channel:
        request = pb.ChargeRequest(amount=pb.Money(currency_code="usd", units=1), credit_card=card(2027, 1))
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await pb_grpc.PaymentServiceStub(channel).Charge(request, timeout=5)
    assert STATUS_DETAILS not in dict(raw.value.trailing_metadata() or ())


async def test_an_unknown_product_is_not_found_with_a_reason() -> None:
    async with serving("productcatalog", catalog_server.bindings()) as endpoints:
        catalog = CatalogClient(endpoints)
        try:
            with pytest.raises(NotFound) as info:
                await catalog.get_product("NOPE")
        finally:
            await catalog.close()
    assert info.value.reason == Reason.UNKNOWN_PRODUCT
    assert info.value.public_message == "that product is not in the catalog"
    assert info.value.failure.code is grpc.StatusCode.NOT_FOUND and info.value.dependency_path == ()


async def test_a_service_that_is_down_is_unavailable_and_blamed() -> None:
    async with serving("currency", currency_server.bindings()) as endpoints:
        pass  # stopped: its address refuses connections now
    client = CurrencyClient(endpoints, timeout=1.0)
    try:
        with pytest.raises(Unavailable) as info:
            await client.supported_currencies()
    finally:
        await client.close()
    failure = info.value.failure
    assert failure.dependency_path == ("currency",) and failure.code is grpc.StatusCode.UNAVAILABLE
    assert failure.retryable and not failure.answered
    assert str(info.value).startswith("currency: ")


async def test_calls_the_mesh_refused_become_unavailable_without_a_code() -> None:
    refusals = [
        (
            CircuitOpen("payment: circuit open (6 of 10 failed)", "payment"),
            "payment: circuit open (6 of 10 failed)",
        ),
        (NoInstances("no live instance of payment", "payment"), "no live instance of payment"),
        (DeadlineExceeded("0.002 s left: too little to call"), "payment: 0.002 s left: too little to call"),
    ]
    for refusal, message in refusals:
        with pytest.raises(Unavailable) as info:
            async with translating("payment"):
                raise refusal
        assert str(info.value) == message
        failure = info.value.failure
        assert failure.code is None and failure.retryable and not failure.answered
        assert failure.dependency_path == ("payment",)
        assert info.value.__cause__ is refusal


def test_a_status_without_an_error_class_keeps_its_code() -> None:
    trailers = grpc.aio.Metadata(("x-served-by", "ad-0"), ("x-failed-dependency", "disk"))
    lost = grpc.aio.AioRpcError(grpc.StatusCode.DATA_LOSS, grpc.aio.Metadata(), trailers, details="bits lost")
    error = from_failed_call("ad", lost)
    assert type(error) is ShopError and error.grpc_code is grpc.StatusCode.DATA_LOSS
    assert error.dependency_path == ("ad", "disk") and error.failure.answered
    assert str(error) == "ad: bits lost"


def test_the_path_of_an_error_is_part_of_its_failure() -> None:
    error = Unavailable("store down", reason="STORE_DOWN")
    error.dependency_path = ("redis",)
    assert error.failure.dependency_path == ("redis",) and error.failure.reason == "STORE_DOWN"
    assert error.failure.detail == "store down" and error.failure.code is None
    assert isinstance(error, ShopError)
