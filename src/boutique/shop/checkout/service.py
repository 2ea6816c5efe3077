"""The checkout's domain logic: validate, price the cart, charge, ship, empty the cart, confirm."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from opentelemetry import trace
from prometheus_client import Counter

from boutique.shop import money
from boutique.shop.email.service import mask_email, validate_email
from boutique.shop.errors import InvalidArgument, ShopError, Unavailable
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.telemetry import tracer

log = logging.getLogger(__name__)

ORDERS = Counter("boutique_shop_orders", "Orders placed, by the currency the shopper paid in.", ["currency"])
REVENUE = Counter(
    "boutique_shop_revenue",
    "Revenue of placed orders (items and shipping), in units of the currency paid in.",
    ["currency"],
)

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


class Catalog(Protocol):
    """The part of the catalog checkout uses (CatalogClient)."""

    async def get_product(self, product_id: str) -> pb.Product:
        """The product with this id."""
        ...


class Cart(Protocol):
    """The part of the cart checkout uses (CartClient)."""

    async def get_cart(self, user_id: str) -> list[pb.CartItem]:
        """The user's cart lines."""
        ...

    async def empty_cart(self, user_id: str) -> None:
        """Remove every line of the user's cart."""
        ...


class Currency(Protocol):
    """The part of the currency service checkout uses (CurrencyClient)."""

    async def convert(self, money: pb.Money, to_code: str) -> pb.Money:
        """The amount in another currency."""
        ...


class Shipping(Protocol):
    """The shipping service (ShippingClient)."""

    async def get_quote(self, address: pb.Address, items: list[pb.CartItem]) -> pb.Money:
        """The USD cost of shipping the items."""
        ...

    async def ship_order(self, address: pb.Address, items: list[pb.CartItem]) -> str:
        """Ship the items; returns a tracking id."""
        ...


class Payment(Protocol):
    """The payment service (PaymentClient)."""

    async def charge(
        self, amount: pb.Money, card: pb.CreditCardInfo, idempotency_key: str | None = None
    ) -> str:
        """Charge the card once per idempotency key; returns a transaction id."""
        ...


class Email(Protocol):
    """The email service (EmailClient)."""

    async def send_order_confirmation(self, email: str, order: pb.OrderResult) -> None:
        """Mail the order's confirmation."""
        ...


def validate_order_request(
    user_id: str, user_currency: str, address: pb.Address, email: str, card: pb.CreditCardInfo | None
) -> None:
    """Raise InvalidArgument naming the first field of a place-order request that cannot be used."""
    if not user_id:
        raise InvalidArgument("user_id is empty")
    if not _CURRENCY_CODE.fullmatch(user_currency):
        raise InvalidArgument(f"user_currency {user_currency!r} is not three uppercase letters (e.g. EUR)")
    validate_email(email)
    for field in ("street_address", "city", "country"):
        if not getattr(address, field).strip():
            raise InvalidArgument(f"address.{field} is empty")
    if card is None or not card.credit_card_number:
        raise InvalidArgument("credit_card is missing")


def _detail(exc: ShopError, dependency: str) -> str:
    """The error's message without the 'service: ' prefix the clients add."""
    text = str(exc)
    return text.removeprefix(f"{dependency}: ")


@asynccontextmanager
async def _depending_on(dependency: str) -> AsyncIterator[None]:
    """Re-raise an Unavailable from inside the block as one that names the dependency."""
    try:
        yield
    except Unavailable as exc:
        raise Unavailable(f"{dependency} is unavailable: {_detail(exc, dependency)}") from exc


class CheckoutService:
    """Places orders against the catalog, cart, currency, shipping, payment and email services."""

    def __init__(
        self,
        catalog: Catalog,
        cart: Cart,
        currency: Currency,
        shipping: Shipping,
        payment: Payment,
        email: Email,
    ) -> None:
        self.catalog = catalog
        self.cart = cart
        self.currency = currency
        self.shipping = shipping
        self.payment = payment
        self.email = email

    async def _convert(self, amount: pb.Money, user_currency: str) -> pb.Money:
        """The amount in the user's currency; an unknown currency is the request's fault."""
        async with _depending_on("currency"):
            try:
                return await self.currency.convert(amount, user_currency)
            except InvalidArgument as exc:
                raise InvalidArgument(f"user_currency: {_detail(exc, 'currency')}") from exc

    async def _price_item(self, item: pb.CartItem, user_currency: str) -> pb.OrderItem:
        """A cart line with its per-unit price in the user's currency."""
        async with _depending_on("productcatalog"):
            product = await self.catalog.get_product(item.product_id)
        cost = await self._convert(product.price_usd, user_currency)
        return pb.OrderItem(item=item, cost=cost)

    async def _price_items(self, items: list[pb.CartItem], user_currency: str) -> list[pb.OrderItem]:
        """Price every line concurrently; all lookups finish before the first failure is raised."""
        results = await asyncio.gather(
            *(self._price_item(item, user_currency) for item in items), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [result for result in results if isinstance(result, pb.OrderItem)]

    async def _charge(self, amount: pb.Money, card: pb.CreditCardInfo, order_id: str) -> str:
        """Charge the card; a rejected card becomes 'payment declined: <reason>'."""
        async with _depending_on("payment"):
            try:
                return await self.payment.charge(amount, card, idempotency_key=order_id)
            except InvalidArgument as exc:
                raise InvalidArgument(f"payment declined: {_detail(exc, 'payment')}") from exc

    async def place_order(
        self,
        user_id: str,
        user_currency: str,
        address: pb.Address,
        email: str,
        card: pb.CreditCardInfo | None,
    ) -> pb.OrderResult:
        """Run the whole checkout for the user's cart and return the order."""
        span = trace.get_current_span()
        span.add_event("request_start", {"app.user.currency": user_currency})
        validate_order_request(user_id, user_currency, address, email, card)
        assert card is not None
        with tracer.start_as_current_span("checkout: get cart"):
            async with _depending_on("cart"):
                cart_items = await self.cart.get_cart(user_id)
        if not cart_items:
            raise InvalidArgument("cart is empty")

        with tracer.start_as_current_span("checkout: price items") as step:
            step.set_attribute("app.cart.items.count", len(cart_items))
            order_items = await self._price_items(cart_items, user_currency)
        with tracer.start_as_current_span("checkout: quote shipping"):
            async with _depending_on("shipping"):
                quote_usd = await self.shipping.get_quote(address, cart_items)
            shipping_cost = await self._convert(quote_usd, user_currency)
        total = money.total(
            [money.multiply(line.cost, line.item.quantity) for line in order_items] + [shipping_cost],
            user_currency,
        )
        span.add_event("prepared", {"app.order.items.count": len(order_items)})

        order_id = str(uuid.uuid4())  # before the charge: it is the charge's idempotency key
        span.set_attribute("app.order.id", order_id)
        with tracer.start_as_current_span("checkout: charge"):
            transaction_id = await self._charge(total, card, order_id)
        span.add_event("charged", {"app.payment.transaction.id": transaction_id})
        with tracer.start_as_current_span("checkout: ship"):
            async with _depending_on("shipping"):
                tracking_id = await self.shipping.ship_order(address, cart_items)
        span.set_attribute("app.shipping.tracking.id", tracking_id)
        with tracer.start_as_current_span("checkout: empty cart"):
            await self._empty_cart(user_id)

        order = pb.OrderResult(
            order_id=order_id,
            shipping_tracking_id=tracking_id,
            shipping_cost=shipping_cost,
            shipping_address=address,
            items=order_items,
        )
        with tracer.start_as_current_span("checkout: confirm"):
            await self._confirm(email, order)
        amount = money.to_decimal(total)
        ORDERS.labels(user_currency).inc()
        REVENUE.labels(user_currency).inc(float(amount))
        span.add_event("order_placed", {"app.order.total": str(amount), "app.order.currency": user_currency})
        log.info(
            "order placed",
            extra={
                "order_id": order.order_id,
                "item_count": sum(line.item.quantity for line in order_items),
                "total": str(amount),
                "currency": user_currency,
                "email": mask_email(email),
                "transaction_id": transaction_id,
            },
        )
        return order

    async def _empty_cart(self, user_id: str) -> None:
        """Empty the cart after shipping; a failure is logged, since the order is already paid and shipped."""
        try:
            await self.cart.empty_cart(user_id)
        except ShopError as exc:
            log.warning("could not empty the cart after an order", extra={"error": str(exc)})

    async def _confirm(self, email: str, order: pb.OrderResult) -> None:
        """Send the confirmation; a failure is logged and does not fail the order."""
        try:
            await self.email.send_order_confirmation(email, order)
        except ShopError as exc:
            log.warning(
                "order confirmation not sent",
                extra={"order_id": order.order_id, "email": mask_email(email), "error": str(exc)},
            )
