"""Currency over real gRPC: the rate table, exact round trips, bad codes and bad Money."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import grpc
import pytest

from boutique.shop import money
from boutique.shop.currency.client import CurrencyClient
from boutique.shop.currency.server import bindings
from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb
from tests.shop.test_productcatalog import EXPECTED_PRICES
from tests.support import serving

ECB_CODES = [
    "EUR",
    "USD",
    "JPY",
    "BGN",
    "CZK",
    "DKK",
    "GBP",
    "HUF",
    "PLN",
    "RON",
    "SEK",
    "CHF",
    "ISK",
    "NOK",
    "HRK",
    "RUB",
    "TRY",
    "AUD",
    "BRL",
    "CAD",
    "CNY",
    "HKD",
    "IDR",
    "ILS",
    "INR",
    "KRW",
    "MXN",
    "MYR",
    "NZD",
    "PHP",
    "SGD",
    "THB",
    "ZAR",
]
CATALOG_PRICES = [pb.Money(currency_code="USD", units=u, nanos=n) for u, n in EXPECTED_PRICES.values()]
CENT = Decimal("0.01")


def cents(amount: pb.Money) -> Decimal:
    """The amount rounded to the cent."""
    return money.to_decimal(amount).quantize(CENT, rounding=ROUND_HALF_EVEN)


@pytest.fixture
async def currency():
    async with serving("currency", bindings()) as endpoints:
        client = CurrencyClient(endpoints)
        yield client
        await client.close()


async def test_supports_the_33_ecb_currencies(currency: CurrencyClient) -> None:
    codes = await currency.supported_currencies()
    assert sorted(codes) == sorted(ECB_CODES)
    assert len(codes) == 33


async def test_converts_with_the_reference_rates(currency: CurrencyClient) -> None:
    eur = await currency.convert(money.usd("11.305"), "EUR")
    assert (eur.currency_code, eur.units, eur.nanos) == ("EUR", 10, 0)
    jpy = await currency.convert(pb.Money(currency_code="EUR", units=2), "JPY")
    assert (jpy.currency_code, jpy.units, jpy.nanos) == ("JPY", 252, 800_000_000)
    # 1 USD = 1/1.1305 EUR = 0.884564352... EUR, rounded half-even to the nano only at the end.
    one = await currency.convert(money.usd("1"), "EUR")
    assert (one.units, one.nanos) == (0, 884_564_352)
    # USD -> GBP in one call keeps full precision between the two legs: 8.99 / 1.1305 * 0.8597.
    gbp = await currency.convert(money.usd("8.99"), "GBP")
    expected = (Decimal("8.99") / Decimal("1.1305") * Decimal("0.85970")).quantize(Decimal("1e-9"))
    assert money.to_decimal(gbp) == expected


async def test_same_currency_is_the_identity(currency: CurrencyClient) -> None:
    for price in CATALOG_PRICES:
        same = await currency.convert(price, "USD")
        assert (same.currency_code, same.units, same.nanos) == ("USD", price.units, price.nanos)


async def test_usd_eur_usd_round_trip_of_every_catalog_price(currency: CurrencyClient) -> None:
    for price in CATALOG_PRICES:
        eur = await currency.convert(price, "EUR")
        assert eur.currency_code == "EUR"
        back = await currency.convert(eur, "USD")
        assert back.currency_code == "USD"
        assert cents(back) == cents(price)


async def test_round_trip_through_every_currency(currency: CurrencyClient) -> None:
    for code in ECB_CODES:
        for price in CATALOG_PRICES:
            there = await currency.convert(price, code)
            assert there.currency_code == code
            back = await currency.convert(there, "USD")
            assert cents(back) == cents(price), (code, price)


async def test_negative_amounts_convert_too(currency: CurrencyClient) -> None:
    refund = pb.Money(currency_code="USD", units=-19, nanos=-990_000_000)
    eur = await currency.convert(refund, "EUR")
    assert eur.units < 0 and eur.nanos <= 0
    back = await currency.convert(eur, "USD")
    assert cents(back) == Decimal("-19.99")
    small = await currency.convert(pb.Money(currency_code="USD", units=0, nanos=-500_000_000), "EUR")
    assert (small.units, small.nanos) == (0, -442_282_176)


async def test_unknown_and_malformed_codes_are_named(currency: CurrencyClient) -> None:
    with pytest.raises(InvalidArgument, match="XYZ"):
        await currency.convert(money.usd("1"), "XYZ")
    with pytest.raises(InvalidArgument, match="XAU"):
        await currency.convert(pb.Money(currency_code="XAU", units=1), "USD")
    for bad in ("usd", "US", "USDX", "", "U$D"):
        with pytest.raises(InvalidArgument, match="malformed"):
            await currency.convert(money.usd("1"), bad)
        with pytest.raises(InvalidArgument, match="malformed"):
            await currency.convert(pb.Money(currency_code=bad, units=1), "EUR")


async def test_bad_nanos_are_invalid(currency: CurrencyClient) -> None:
    with pytest.raises(InvalidArgument, match="same sign"):
        await currency.convert(pb.Money(currency_code="USD", units=1, nanos=-1), "EUR")
    with pytest.raises(InvalidArgument, match="same sign"):
        await currency.convert(pb.Money(currency_code="USD", units=-1, nanos=1), "EUR")
    for nanos in (1_000_000_000, -1_000_000_000):
        with pytest.raises(InvalidArgument, match="nanos"):
            await currency.convert(pb.Money(currency_code="USD", units=0, nanos=nanos), "EUR")


async def test_too_large_a_result_is_invalid(currency: CurrencyClient) -> None:
    biggest = pb.Money(currency_code="EUR", units=2**63 - 1, nanos=999_999_999)
    with pytest.raises(InvalidArgument, match="too large"):
        await currency.convert(biggest, "IDR")


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(currency: CurrencyClient) -> None:
    address = currency.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary("/hipstershop.CurrencyService/Convert")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await currency.convert(money.usd("1"), "EUR")).currency_code == "EUR"
