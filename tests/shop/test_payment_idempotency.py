"""A retried charge is never a second charge: the idempotency key makes Charge safe to retry."""

from __future__ import annotations

from datetime import date

import pytest

from boutique.shop.errors import InvalidArgument, Unavailable
from boutique.shop.payment.client import PaymentClient
from boutique.shop.payment.server import bindings
from boutique.shop.payment.service import PaymentService
from boutique.shop.proto import demo_pb2 as pb
from tests.support import serving

CARD = pb.CreditCardInfo(
    credit_card_number="4432-8015-6152-0454",
    credit_card_cvv=672,
    credit_card_expiration_year=2030,
    credit_card_expiration_month=1,
)
AMOUNT = pb.Money(currency_code="EUR", units=48, nanos=970_000_000)


class LostReply:
    """Fails the first `times` charges after they are recorded, as a reply lost on the way back would."""

    def __init__(self, times: int) -> None:
        self.left = times

    def __call__(self) -> None:
        if self.left > 0:
            self.left -= 1
            raise Unavailable("connection reset after the charge was recorded")


def service(failures: int) -> PaymentService:
    return PaymentService(today=lambda: date(2026, 11, 1), after_record=LostReply(failures))


async def test_a_retried_charge_returns_the_first_transaction_and_charges_once() -> None:
    payment = service(failures=1)
    async with serving("payment", bindings(payment)) as endpoints:
        client = PaymentClient(endpoints)
        try:
            transaction = await client.charge(AMOUNT, CARD, idempotency_key="order-7f3a")
            assert payment.ledger.recorded == 1, "the retry must not record a second charge"
            assert payment.ledger.get("order-7f3a").transaction_id == transaction
            # Asking again later (a client that never saw the answer) still charges nothing new.
            assert await client.charge(AMOUNT, CARD, idempotency_key="order-7f3a") == transaction
            assert payment.ledger.recorded == 1
        finally:
            await client.close()


async def test_without_a_key_a_failed_charge_is_not_retried() -> None:
    payment = service(failures=0)
    calls = []
    original = payment.charge

    async def counting(*args: object) -> str:
        calls.append(args)
        result = await original(*args)  # type: ignore[arg-type]
        raise Unavailable(f"reply lost ({result})")

    payment.charge = counting  # type: ignore[method-assign]
    async with serving("payment", bindings(payment)) as endpoints:
        client = PaymentClient(endpoints)
        try:
            with pytest.raises(Unavailable):
                await client.charge(AMOUNT, CARD)
            assert len(calls) == 1, "a charge without an idempotency key must never be sent twice"
        finally:
            await client.close()


async def test_a_key_reused_for_a_different_charge_is_refused() -> None:
    payment = service(failures=0)
    async with serving("payment", bindings(payment)) as endpoints:
        client = PaymentClient(endpoints)
        try:
            await client.charge(AMOUNT, CARD, idempotency_key="order-1")
            other = pb.Money(currency_code="EUR", units=1)
            with pytest.raises(InvalidArgument, match="different charge"):
                await client.charge(other, CARD, idempotency_key="order-1")
            with pytest.raises(InvalidArgument, match="idempotency key"):
                await client.charge(AMOUNT, CARD, idempotency_key="x" * 500)
            assert payment.ledger.recorded == 1
        finally:
            await client.close()
