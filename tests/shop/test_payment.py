"""Payment over real gRPC: accepted cards, every rejection, expiry on a pinned date, no card data in logs."""

from __future__ import annotations

import logging
import re
from datetime import date

import grpc
import pytest

from boutique.mesh.logs import JsonFormatter
from boutique.shop import money
from boutique.shop.errors import InvalidArgument
from boutique.shop.payment.client import PaymentClient
from boutique.shop.payment.server import bindings
from boutique.shop.payment.service import PaymentService, card_type, luhn_valid
from boutique.shop.proto import demo_pb2 as pb
from tests.support import serving

TODAY = date(2025, 6, 15)
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
AMOUNT = money.usd("42.17")
VISA = "4432-8015-6152-0454"
# Every number below passes the Luhn check unless its name says otherwise.
MASTERCARD_51_55 = "5555 5555 5555 4444"
MASTERCARD_2_SERIES = "2223003122003222"
AMEX = "378282246310005"


def card(number: str, cvv: int = 123, year: int = 2027, month: int = 8) -> pb.CreditCardInfo:
    return pb.CreditCardInfo(
        credit_card_number=number,
        credit_card_cvv=cvv,
        credit_card_expiration_year=year,
        credit_card_expiration_month=month,
    )


@pytest.fixture
async def payment():
    async with serving("payment", bindings(PaymentService(today=lambda: TODAY))) as endpoints:
        client = PaymentClient(endpoints)
        yield client
        await client.close()


def test_the_sample_numbers_are_what_the_tests_assume() -> None:
    for number in (VISA, MASTERCARD_51_55, MASTERCARD_2_SERIES, AMEX, "4111111111111111", "79927398713"):
        assert luhn_valid(re.sub(r"[ -]", "", number)), number
    assert not luhn_valid("4432801561520455")
    assert not luhn_valid("79927398710")
    assert card_type("4432801561520454") == "VISA"
    assert card_type("2221000000000009") == card_type("2720990000000007") == "Mastercard"
    assert card_type("2220999999999991") == card_type("2721000000000004") == "unknown card type"
    assert card_type("371449635398431") == "American Express"


@pytest.mark.parametrize(
    "number",
    [
        VISA,
        "4432801561520454",
        "4222222222222",  # 13 digits
        "4111111111111111110",  # 19 digits
        MASTERCARD_51_55,
        "5105105105105100",
        MASTERCARD_2_SERIES,
        "2221000000000009",  # lowest 2-series prefix
        "2720990000000007",  # highest 2-series prefix
    ],
)
async def test_valid_visa_and_mastercard_are_charged(payment: PaymentClient, number: str) -> None:
    transaction_id = await payment.charge(AMOUNT, card(number))
    assert UUID4.fullmatch(transaction_id)


async def test_every_charge_gets_a_fresh_transaction_id(payment: PaymentClient) -> None:
    ids = {await payment.charge(AMOUNT, card(VISA)) for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        (AMEX, "American Express"),
        ("3714-496353-98431", "American Express"),
        ("6011000000000004", "Discover"),
        ("3530000000000003", "JCB"),
        ("36000000000008", "Diners Club"),
    ],
)
async def test_other_brands_are_rejected_by_name(payment: PaymentClient, number: str, brand: str) -> None:
    with pytest.raises(InvalidArgument, match=f"{brand} cards are not accepted"):
        await payment.charge(AMOUNT, card(number))


async def test_amex_rejection_is_invalid_argument_on_the_wire(payment: PaymentClient) -> None:
    address = payment.endpoints.addresses[0]
    request = pb.ChargeRequest(amount=AMOUNT, credit_card=card(AMEX))
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.PaymentService/Charge")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(request.SerializeToString(), timeout=2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "American Express" in (info.value.details() or "")
    assert AMEX not in (info.value.details() or "")


@pytest.mark.parametrize(
    "number", ["2220999999999991", "2721000000000004", "6212345678901232", "79927398713"]
)
async def test_unknown_brands_are_rejected(payment: PaymentClient, number: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown card type"):
        await payment.charge(AMOUNT, card(number))


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("4432-8015-6152-0455", "Luhn"),
        ("5555555555554445", "Luhn"),
        ("411111111111116", "VISA card numbers have 13 or 16 or 19 digits, not 15"),
        ("41111111111114", "VISA card numbers have 13 or 16 or 19 digits, not 14"),
        ("555555555555442", "Mastercard card numbers have 16 digits, not 15"),
        ("55555555555554449", "Mastercard card numbers have 16 digits, not 17"),
        ("", "empty"),
        (" - ", "empty"),
        ("4432 8015 6152 045x", "only digits"),
        ("4432.8015.6152.0454", "only digits"),
        ("٤٤٣٢٨٠١٥٦١٥٢٠٤٥٤", "only digits"),  # Arabic-Indic digits are not card digits
        ("4" * 20, "longer than 19"),
    ],
)
async def test_malformed_numbers_are_rejected(payment: PaymentClient, number: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await payment.charge(AMOUNT, card(number))


async def test_expiry_is_judged_by_month(payment: PaymentClient) -> None:
    assert await payment.charge(AMOUNT, card(VISA, year=2025, month=6))  # this month still counts
    assert await payment.charge(AMOUNT, card(VISA, year=2026, month=1))
    for year, month in ((2025, 5), (2024, 12), (1999, 1)):
        with pytest.raises(InvalidArgument, match="expired"):
            await payment.charge(AMOUNT, card(VISA, year=year, month=month))


@pytest.mark.parametrize("year", [TODAY.year + 50, TODAY.year + 70, 9999])
async def test_any_future_four_digit_year_is_charged(payment: PaymentClient, year: int) -> None:
    """No upper bound: Online Boutique's load generator sends expiry years up to 70 years ahead."""
    assert UUID4.fullmatch(await payment.charge(AMOUNT, card(VISA, year=year, month=1)))


@pytest.mark.parametrize("year", [0, 25, 999, 10000, 20951, -2030])
async def test_expiration_year_must_have_four_digits(payment: PaymentClient, year: int) -> None:
    message = f"expiration year {year} must have four digits, like {TODAY.year + 1}"
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        await payment.charge(AMOUNT, card(VISA, year=year, month=1))


@pytest.mark.parametrize("month", [0, 13, -1])
async def test_expiration_month_must_be_1_to_12(payment: PaymentClient, month: int) -> None:
    with pytest.raises(InvalidArgument, match=f"month {month} must be 1 to 12"):
        await payment.charge(AMOUNT, card(VISA, year=2030, month=month))


async def test_cvv_range(payment: PaymentClient) -> None:
    assert await payment.charge(AMOUNT, card(VISA, cvv=0))
    assert await payment.charge(AMOUNT, card(VISA, cvv=9999))
    for cvv in (-1, 10000):
        with pytest.raises(InvalidArgument, match="CVV"):
            await payment.charge(AMOUNT, card(VISA, cvv=cvv))


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (pb.Money(currency_code="USD", units=-1), "negative"),
        (pb.Money(currency_code="USD", units=0, nanos=-1), "negative"),
        (pb.Money(currency_code="USD", units=1, nanos=-5), "same sign"),
        (pb.Money(currency_code="USD", units=1, nanos=1_000_000_000), "nanos"),
        (pb.Money(currency_code="usd", units=1), "three capital letters"),
        (pb.Money(currency_code="", units=1), "three capital letters"),
        (pb.Money(currency_code="EURO", units=1), "three capital letters"),
    ],
)
async def test_amount_must_be_valid_money(payment: PaymentClient, amount: pb.Money, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await payment.charge(amount, card(VISA))


async def test_zero_and_other_currencies_are_charged(payment: PaymentClient) -> None:
    assert await payment.charge(pb.Money(currency_code="USD"), card(VISA))
    assert await payment.charge(pb.Money(currency_code="JPY", units=2500), card(MASTERCARD_2_SERIES))


async def test_logs_show_brand_and_last_four_only(
    payment: PaymentClient, caplog: pytest.LogCaptureFixture
) -> None:
    cvv = 8317
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        transaction_id = await payment.charge(AMOUNT, card(VISA, cvv=cvv))
        with pytest.raises(InvalidArgument):
            await payment.charge(AMOUNT, card(AMEX, cvv=cvv))
        with pytest.raises(InvalidArgument):
            await payment.charge(AMOUNT, card("4432-8015-6152-0455", cvv=cvv))

    accepted = [r for r in caplog.records if r.getMessage() == "charge accepted"]
    assert len(accepted) == 1
    assert (accepted[0].card_type, accepted[0].card_last_four) == ("VISA", "0454")
    assert accepted[0].transaction_id == transaction_id
    assert len([r for r in caplog.records if r.getMessage() == "charge declined"]) == 2

    formatter = JsonFormatter("payment", "payment-test")
    text = "\n".join(formatter.format(record) for record in caplog.records).replace(transaction_id, "")
    for secret in (VISA, "4432801561520454", "443280156152", AMEX, "37828224631", "4432801561520455"):
        assert secret not in text
    assert not re.search(rf"(?<!\d){cvv}(?!\d)", text)
    assert "cvv" not in text.lower()


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(payment: PaymentClient) -> None:
    address = payment.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.PaymentService/Charge")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert UUID4.fullmatch(await payment.charge(AMOUNT, card(VISA)))
