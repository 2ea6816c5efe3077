"""The shipping domain logic: a flat quote and tracking ids for validated shipments.

Two flags slow quotes down, each recorded on the quote's span: intlShippingSlowdown (seconds) delays
quotes for addresses outside the US, and shippingWorkerPool (N > 0) lets only N quotes be worked on at
once, each holding its worker for QUOTE_WORK_SECONDS, so the rest wait for a free one. Neither ever
works past the caller's deadline: a wait or a delay longer than what is left stops when it runs out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from opentelemetry import trace

from boutique.mesh import deadline
from boutique.mesh.errors import DeadlineExceeded
from boutique.mesh.flags import flags
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
INTL_SHIPPING_SLOWDOWN = "intlShippingSlowdown"  # flag: seconds a quote for outside the US takes
SHIPPING_WORKER_POOL = "shippingWorkerPool"  # flag: how many quotes are worked on at once (0: no limit)
QUOTE_WORK_SECONDS = 0.05  # the work of one quote while the worker pool is on
# How the US is written in an address's free-text country field (compared without dots, any case).
DOMESTIC = frozenset({"us", "usa", "united states", "united states of america"})


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


def is_domestic(country: str) -> bool:
    """Whether an address's country is the US, however written ("US", "u.s.a.", "United States")."""
    return " ".join(country.replace(".", "").split()).lower() in DOMESTIC


async def pause(seconds: float, what: str) -> None:
    """Sleep `seconds`, never past the caller's deadline: when less is left, sleep that and stop
    (DeadlineExceeded), so nothing is done for a caller that gave up."""
    left = deadline.remaining()
    if left is not None and left < seconds:
        await asyncio.sleep(max(0.0, left))
        raise DeadlineExceeded(
            f"{what}: the caller's deadline ran out {max(0.0, left) * 1000:.0f} ms into {seconds * 1000:.0f} ms"
        )
    await asyncio.sleep(seconds)


class ShippingService:
    """Quotes shipping at a flat rate and ships orders, giving each shipment a tracking id."""

    def __init__(self) -> None:
        self._pools: dict[int, asyncio.Semaphore] = {}  # quote workers, by pool size (the flag's value)

    async def get_quote(self, address: pb.Address, items: list[Item]) -> pb.Money:
        """8.99 USD when the items hold at least one unit, else 0 USD (slowed down as the flags say)."""
        _check_items(items, min_quantity=0)
        workers = int(flags().number(SHIPPING_WORKER_POOL))
        if workers > 0:
            async with self._worker(workers):
                await self._delay_international(address)
                await pause(QUOTE_WORK_SECONDS, "quote")
        else:
            await self._delay_international(address)
        units = sum(item.quantity for item in items)
        return money.from_decimal(FLAT_RATE_USD if units > 0 else Decimal(0), "USD")

    async def _delay_international(self, address: pb.Address) -> None:
        """Take the intlShippingSlowdown flag's seconds for an address outside the US (none inside)."""
        if is_domestic(address.country):
            return
        seconds = flags().number(INTL_SHIPPING_SLOWDOWN, country=address.country)
        if seconds <= 0:
            return
        span = trace.get_current_span()
        span.set_attributes(
            {"app.shipping.international": True, "app.shipping.delay_ms": round(seconds * 1000)}
        )
        try:
            await pause(seconds, f"international quote delayed {seconds:g} s by {INTL_SHIPPING_SLOWDOWN}")
        except DeadlineExceeded:
            span.add_event("delay cut short by the caller's deadline")
            raise

    @asynccontextmanager
    async def _worker(self, size: int) -> AsyncIterator[None]:
        """Hold one of `size` quote workers for the block, waiting (within the deadline) for a free one;
        the wait and the pool's size go on the span."""
        pool = self._pools.get(size) or self._pools.setdefault(size, asyncio.Semaphore(size))
        span = trace.get_current_span()
        span.set_attribute("app.pool.queued", pool.locked())  # every worker busy: this quote waits
        started = time.monotonic()
        left = deadline.remaining()
        try:
            async with asyncio.timeout(max(0.0, left) if left is not None else None):
                await pool.acquire()
        except TimeoutError:
            raise DeadlineExceeded(
                f"no free quote worker (pool of {size}) before the caller's deadline ran out"
            ) from None
        finally:
            waited = (time.monotonic() - started) * 1000
            span.set_attributes({"app.pool.size": size, "app.pool.wait_ms": round(waited, 3)})
        try:
            yield
        finally:
            pool.release()

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
