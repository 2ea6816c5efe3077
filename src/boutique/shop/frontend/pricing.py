"""Prices in the shopper's currency: concurrent conversion, falling back to USD when it fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from boutique.shop.currency.client import CurrencyClient
from boutique.shop.errors import ShopError
from boutique.shop.proto import demo_pb2 as pb

log = logging.getLogger(__name__)

BASE_CURRENCY = "USD"


@dataclass(frozen=True)
class Prices:
    """Amounts in `currency`, in the order asked; `note` explains a fallback to USD."""

    amounts: list[pb.Money] = field(default_factory=list)
    currency: str = BASE_CURRENCY
    note: str = ""


async def convert_all(client: CurrencyClient, amounts: Sequence[pb.Money], code: str) -> Prices:
    """Convert USD amounts to `code` concurrently; any failure shows every amount in USD with a note."""
    if code == BASE_CURRENCY or not amounts:
        return Prices(list(amounts), BASE_CURRENCY)
    results = await asyncio.gather(
        *(client.convert(amount, code) for amount in amounts), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        if not isinstance(failure, ShopError):
            raise failure
    if failures or any(r.currency_code != code for r in results if isinstance(r, pb.Money)):
        first = failures[0] if failures and isinstance(failures[0], ShopError) else None
        log.warning(
            "currency conversion failed, showing USD",
            extra={
                "to_currency": code,
                "error": str(first) if first else "wrong currency returned",
                **(first.failure.log_fields() if first else {}),
            },
        )
        note = f"Prices are shown in USD: conversion to {code} is not available right now."
        return Prices(list(amounts), BASE_CURRENCY, note)
    return Prices([r for r in results if isinstance(r, pb.Money)], code)
