"""Money arithmetic: exact, sign-correct, and shown the way shoppers read prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from boutique.shop import money
from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb


def test_from_decimal_keeps_the_sign_in_nanos() -> None:
    assert money.from_decimal(Decimal("-1.25"), "USD") == pb.Money(
        currency_code="USD", units=-1, nanos=-250_000_000
    )
    assert money.from_decimal(Decimal("0.0000000005"), "USD").nanos == 0  # half-even to the nano
    assert money.from_decimal(Decimal("0.0000000015"), "USD").nanos == 2


def test_total_and_multiply_are_exact() -> None:
    prices = [money.usd("19.99"), money.multiply(money.usd("0.10"), 3), money.usd("8.99")]
    assert money.to_decimal(money.total(prices, "USD")) == Decimal("29.28")
    with pytest.raises(InvalidArgument, match="EUR"):
        money.total([money.usd("1"), pb.Money(currency_code="EUR", units=1)], "USD")


def test_validate_rejects_bad_nanos() -> None:
    for bad in (pb.Money(units=1, nanos=-1), pb.Money(units=-1, nanos=1), pb.Money(nanos=1_000_000_000)):
        with pytest.raises(InvalidArgument):
            money.validate(bad)
    money.validate(pb.Money(units=-3, nanos=-5))


def test_display() -> None:
    assert money.display(money.from_decimal(Decimal("1234.565"), "EUR")) == "€1,234.56"
    assert money.display(money.from_decimal(Decimal("2345.4"), "JPY")) == "¥2,345"
    assert money.display(money.from_decimal(Decimal("20.1"), "CHF")) == "CHF 20.10"
