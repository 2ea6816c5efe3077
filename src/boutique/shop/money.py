"""Exact money arithmetic on the `Money` message (units + nanos) with Decimal, never floats."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb

NANOS_PER_UNIT = 1_000_000_000
_NANO = Decimal("1e-9")
_INT64_MAX = 2**63 - 1

SYMBOLS = {"USD": "$", "EUR": "€", "CAD": "CA$", "JPY": "¥", "GBP": "£", "TRY": "₺"}
NO_MINOR_UNITS = {"JPY", "KRW", "ISK", "HUF", "IDR"}  # shown without decimals, as people price in them


def validate(money: pb.Money) -> None:
    """Raise InvalidArgument unless nanos is in range and carries the sign of units."""
    if not -999_999_999 <= money.nanos <= 999_999_999:
        raise InvalidArgument(f"money nanos {money.nanos} outside ±999,999,999")
    if (money.units > 0 and money.nanos < 0) or (money.units < 0 and money.nanos > 0):
        raise InvalidArgument("money units and nanos must have the same sign")


def to_decimal(money: pb.Money) -> Decimal:
    """The exact decimal value of a Money."""
    return Decimal(money.units) + Decimal(money.nanos) * _NANO


def from_decimal(value: Decimal, currency_code: str) -> pb.Money:
    """A Money for a decimal value, rounded half-even to the nano."""
    value = value.quantize(_NANO, rounding=ROUND_HALF_EVEN)
    units = int(value)  # truncates toward zero, so nanos keeps the sign of units
    nanos = int((value - units) * NANOS_PER_UNIT)
    if abs(units) > _INT64_MAX:
        raise InvalidArgument("money amount too large")
    return pb.Money(currency_code=currency_code, units=units, nanos=nanos)


def usd(text: str) -> pb.Money:
    """A USD Money from a decimal string such as '8.99'."""
    return from_decimal(Decimal(text), "USD")


def total(amounts: list[pb.Money], currency_code: str) -> pb.Money:
    """Sum amounts of one currency; a mixed list is an InvalidArgument."""
    result = Decimal(0)
    for amount in amounts:
        if amount.currency_code != currency_code:
            raise InvalidArgument(f"cannot add {amount.currency_code} to {currency_code}")
        result += to_decimal(amount)
    return from_decimal(result, currency_code)


def multiply(money: pb.Money, factor: int) -> pb.Money:
    """The amount times a whole number (a cart line's quantity)."""
    return from_decimal(to_decimal(money) * factor, money.currency_code)


def display(money: pb.Money) -> str:
    """Human form rounded to the cent (or the unit for yen and the like), e.g. '€17.68', 'CHF 20.10', '¥2,345'."""
    step = Decimal(1) if money.currency_code in NO_MINOR_UNITS else Decimal("0.01")
    amount = to_decimal(money).quantize(step, rounding=ROUND_HALF_EVEN)
    symbol = SYMBOLS.get(money.currency_code)
    return f"{symbol}{amount:,}" if symbol else f"{money.currency_code} {amount:,}"
