"""The shipping domain logic: a flat quote and tracking ids for validated shipments."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from decimal import Decimal

from boutique.mesh import deadline
from boutique.shop import money
from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb

log = logging.getLogger(__name__)

FLAT_RATE_USD = Decimal("8.99")
TRACKING_PREFIX = "SH"
# Crockford's base-32 alphabet: capitals and digits without I, L, O and U, easy to read aloud.
TRACKING_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TRACKING_GROUPS = 3
TRACKING_GROUP_LENGTH = 4


@dataclass(frozen=True)
class Item:
    """A product and how many units of it to ship."""

    product_id: str
    quantity: int


def new_tracking_id() -> str:
    """A fresh id such as 'SH-7Q4K-2M9X-81D3': 60 random bits from `secrets`."""
    groups = (
        "".join(secrets.choice(TRACKING_ALPHABET) for _ in range(TRACKING_GROUP_LENGTH))
        for _ in range(TRACKING_GROUPS)
    )
    return "-".join((TRACKING_PREFIX, *groups))


def _check_items(items: list[Item], min_quantity: int) -> None:
    """InvalidArgument naming the first item without a product id or with too small a quantity."""
    for index, item in enumerate(items):
        if not item.product_id:
            raise InvalidArgument(f"items[{index}].product_id is empty")
        if item.quantity < min_quantity:
            raise InvalidArgument(f"items[{index}].quantity {item.quantity} must be at least {min_quantity}")


def _check_address(address: pb.Address) -> None:
    """InvalidArgument naming the first missing or out-of-range address field."""
    for name in ("street_address", "city", "country"):
        if not getattr(address, name).strip():
            raise InvalidArgument(f"address.{name} is empty")
    if address.zip_code < 0:
        raise InvalidArgument(f"address.zip_code {address.zip_code} must not be negative")


class ShippingService:
    """Quotes shipping at a flat rate and ships orders, giving each shipment a tracking id."""

    async def get_quote(self, address: pb.Address, items: list[Item]) -> pb.Money:
        """8.99 USD when the items hold at least one unit, else 0 USD; the address is not needed yet."""
        _check_items(items, min_quantity=0)
        units = sum(item.quantity for item in items)
        return money.from_decimal(FLAT_RATE_USD if units > 0 else Decimal(0), "USD")

    async def ship_order(self, address: pb.Address, items: list[Item]) -> str:
        """Check the address and items, then return a fresh tracking id."""
        _check_address(address)
        if not items:
            raise InvalidArgument("items is empty: nothing to ship")
        _check_items(items, min_quantity=1)
        deadline.check("ship the order")  # the caller gave up: nothing ships on its behalf
        tracking_id = new_tracking_id()
        log.info(
            "order shipped",
            extra={
                "tracking_id": tracking_id,
                "units": sum(item.quantity for item in items),
                "country": address.country,
            },
        )
        return tracking_id
