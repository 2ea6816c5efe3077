"""The currency domain logic: convert Money through the euro with exact Decimal arithmetic."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation, localcontext
from importlib import resources

from boutique.shop import money
from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.telemetry import tracer

BASE = "EUR"
_CODE = re.compile(r"[A-Z]{3}")
# Enough digits for an int64 amount with nanos divided and multiplied by a rate without loss.
_PRECISION = 60


def load_rates() -> dict[str, Decimal]:
    """Read `rates.json` beside this module: units of each currency per one euro, in file order."""
    text = resources.files(__package__).joinpath("rates.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("base") != BASE:
        raise ValueError(f"rates.json: base must be {BASE}, not {data.get('base')!r}")
    rates: dict[str, Decimal] = {}
    for code, rate_text in data["rates"].items():
        if not _CODE.fullmatch(code):
            raise ValueError(f"rates.json: malformed currency code {code!r}")
        try:
            rate = Decimal(rate_text)
        except InvalidOperation:
            raise ValueError(f"rates.json: rate of {code} is not a decimal: {rate_text!r}") from None
        if not rate.is_finite() or rate <= 0:
            raise ValueError(f"rates.json: rate of {code} must be positive, not {rate_text!r}")
        rates[code] = rate
    if rates.get(BASE) != 1:
        raise ValueError(f"rates.json: the base {BASE} must have rate 1")
    return rates


class CurrencyService:
    """Converts amounts with a static table of euro reference rates."""

    def __init__(self, rates: dict[str, Decimal]) -> None:
        self.rates = dict(rates)

    def _rate(self, code: str, role: str) -> Decimal:
        """The rate of a code, or InvalidArgument naming the malformed or unknown code."""
        if not _CODE.fullmatch(code):
            raise InvalidArgument(f"{role} currency code {code!r} is malformed: use three capital letters")
        try:
            return self.rates[code]
        except KeyError:
            raise InvalidArgument(f"{role} currency code {code!r} is not supported") from None

    async def supported_currencies(self) -> list[str]:
        """Every code in the table, base first."""
        return list(self.rates)

    async def convert(self, amount: pb.Money, to_code: str) -> pb.Money:
        """Convert via the euro at full precision, rounding half-even to the nano only at the end."""
        with tracer.start_as_current_span(
            "currency: convert",
            attributes={"app.currency.from": amount.currency_code[:8], "app.currency.to": to_code[:8]},
        ) as span:
            money.validate(amount)
            from_rate = self._rate(amount.currency_code, "source")
            to_rate = self._rate(to_code, "target")
            with localcontext() as context:
                context.prec = _PRECISION
                converted = money.to_decimal(amount) / from_rate * to_rate
                span.add_event("converted", {"app.currency.rate": str(to_rate / from_rate)})
                return money.from_decimal(converted, to_code)
