"""The cart domain logic: validate and apply adds, reads and empties against a CartStore."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from boutique.mesh import deadline
from boutique.mesh.flags import flags
from boutique.shop.cart.store import AddIdReused, CartStore, LineLimitExceeded
from boutique.shop.errors import InvalidArgument, Reason, Unavailable

CART_ADDS = Counter("boutique_shop_cart_adds", "Add-to-cart operations that succeeded.")
CART_ITEMS_ADDED = Counter("boutique_shop_cart_items_added", "Items added to carts (quantities summed).")

log = logging.getLogger(__name__)

MAX_USER_ID_LENGTH = 128
MAX_PRODUCT_ID_LENGTH = 64
MIN_ADD_QUANTITY = 1
MAX_ADD_QUANTITY = 10
MAX_LINE_QUANTITY = 99
MAX_ADD_ID_LENGTH = 128
CART_FAILURE = "cartFailure"  # flag: the fraction (0..1) of EmptyCart calls that fail


@dataclass(frozen=True)
class CartLine:
    """One product in a cart and how many of it."""

    product_id: str
    quantity: int


def _check_id(value: str, field: str, max_length: int) -> None:
    """InvalidArgument naming the field unless the id is non-empty and short enough."""
    if not value:
        raise InvalidArgument(f"{field} is empty")
    if len(value) > max_length:
        raise InvalidArgument(f"{field} longer than {max_length} characters")


def _check_add_id(add_id: str) -> None:
    """InvalidArgument unless the add id is 1..128 printable ASCII characters."""
    if not 0 < len(add_id) <= MAX_ADD_ID_LENGTH or not add_id.isascii() or not add_id.isprintable():
        raise InvalidArgument(f"add id must be 1 to {MAX_ADD_ID_LENGTH} printable ASCII characters")


class CartService:
    """Carts keyed by user id; adding a product already in the cart raises its quantity.

    `draw` picks which calls a failure flag fails (a number in [0, 1) per call; tests pin it).
    """

    def __init__(
        self,
        store: CartStore,
        max_line_quantity: int = MAX_LINE_QUANTITY,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.max_line_quantity = max_line_quantity
        self.draw = draw

    async def add_item(self, user_id: str, product_id: str, quantity: int, add_id: str | None = None) -> int:
        """Add 1..10 of a product; returns the line's new quantity, capped at `max_line_quantity`.

        The add is applied once per `add_id` (the caller's idempotency key; a fresh one when None), so
        it can be retried after a lost answer without adding twice.
        """
        _check_id(user_id, "user_id", MAX_USER_ID_LENGTH)
        _check_id(product_id, "product_id", MAX_PRODUCT_ID_LENGTH)
        if not MIN_ADD_QUANTITY <= quantity <= MAX_ADD_QUANTITY:
            raise InvalidArgument(
                f"quantity {quantity} out of range: add {MIN_ADD_QUANTITY} to {MAX_ADD_QUANTITY} at a time"
            )
        if add_id is None:
            add_id = uuid.uuid4().hex
        _check_add_id(add_id)
        deadline.check("add to the cart")  # the caller gave up: change nothing on its behalf
        try:
            new_total = await self.store.add(user_id, product_id, quantity, self.max_line_quantity, add_id)
        except LineLimitExceeded:
            raise InvalidArgument(
                f"quantity of {product_id!r} would exceed {self.max_line_quantity} per cart line"
            ) from None
        except AddIdReused:
            raise InvalidArgument(f"add id {add_id!r} was already used for another add") from None
        CART_ADDS.inc()
        CART_ITEMS_ADDED.inc(quantity)
        log.debug("cart item added", extra={"product_id": product_id, "quantity": quantity})
        return new_total

    async def get_cart(self, user_id: str) -> list[CartLine]:
        """The user's lines; an unknown user has an empty cart."""
        _check_id(user_id, "user_id", MAX_USER_ID_LENGTH)
        lines = await self.store.get(user_id)
        return [CartLine(product_id, quantity) for product_id, quantity in lines.items()]

    async def empty_cart(self, user_id: str) -> None:
        """Remove every line of the user's cart (unless the cartFailure flag fails this call)."""
        _check_id(user_id, "user_id", MAX_USER_ID_LENGTH)
        deadline.check("empty the cart")
        fraction = flags().number(CART_FAILURE)
        if fraction > 0 and self.draw() < fraction:
            raise Unavailable(
                f"EmptyCart failed on purpose: the {CART_FAILURE} flag fails {fraction:.0%} of them; "
                "the cart is unchanged",
                reason=Reason.FAULT_INJECTED,
                metadata={"flag": CART_FAILURE},
            )
        await self.store.empty(user_id)
