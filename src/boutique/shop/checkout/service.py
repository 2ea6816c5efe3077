"""The checkout's domain logic: validate, price the cart, charge, ship, empty the cart, confirm.

An order is a saga with one commit point, the shipment. Each step is written to the order journal
before the next begins. Before the shipment the caller's deadline governs: no charge or shipment
starts once too little of it is left, and a charge whose order cannot go on is voided. After the
shipment the order completes on checkout's own time (cart emptied, confirmation sent), even if the
caller has gone. An order key (the `idempotency-key` of PlaceOrder) makes placing idempotent.

A cart that cannot be emptied after the shipment does not undo the order (it is paid and shipped): the
order is placed, and the failure is recorded on its span, in the journal and in a counter. The cart is
not emptied later behind the shopper's back: by then it may hold lines added after the order.

The paymentUnreachable flag, read at each charge, sends the charge to a payment address that does not
answer (see `unreachable.py`), so the order fails as it does when payment is down: nothing charged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import NoReturn, Protocol

from opentelemetry import trace
from prometheus_client import Counter

from boutique.mesh import deadline
from boutique.mesh.errors import DeadlineExceeded
from boutique.mesh.flags import flags
from boutique.shop import money
from boutique.shop.checkout.store import Claim, OrderJournal, OrderRecord, Step
from boutique.shop.email_address import mask_email, validate_email
from boutique.shop.errors import Aborted, InvalidArgument, Reason, ShopError, Unavailable
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.telemetry import tracer

log = logging.getLogger(__name__)

ORDERS = Counter("boutique_shop_orders", "Orders placed, by the currency the shopper paid in.", ["currency"])
REVENUE = Counter(
    "boutique_shop_revenue",
    "Revenue of placed orders (items and shipping), in units of the currency paid in.",
    ["currency"],
)

VOIDED = Counter("boutique_shop_orders_voided", "Orders given up after their charge, the charge voided.")
RECOVERED = Counter(
    "boutique_shop_orders_recovered",
    "Orders another checkout left open (it died or stopped), finished or undone, by outcome.",
    ["outcome"],
)
CARTS_NOT_EMPTIED = Counter(
    "boutique_shop_orders_cart_not_emptied",
    "Orders placed whose cart could not be emptied afterwards (its lines stay for the shopper).",
)

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
MAX_KEY_LENGTH = 128
# Before charging, at least this much of the caller's deadline must be left for the charge and the
# shipment; otherwise the order is refused with nothing charged.
TIME_TO_FINISH = 1.0
# Undoing a charge and completing a shipped order run on checkout's own time, not the caller's.
OWN_TIME = 5.0
LEASE_MARGIN = 5.0
DECLINED = "payment declined"  # how a declined card's message begins (Online Boutique's wording)
PAYMENT_UNREACHABLE = "paymentUnreachable"  # flag: charges go to a payment address that does not answer


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

    async def refund(self, idempotency_key: str) -> tuple[bool, str]:
        """Void the charge made under the key (or forbid one); (whether one was made, its transaction id)."""
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


@dataclass(frozen=True)
class OrderStatus:
    """What became of an order key: the journal's step, the order when placed, and a message."""

    step: Step | None  # None: no order under this key (for this shopper)
    order: pb.OrderResult | None = None
    message: str = ""


def check_order_key(key: str) -> None:
    """InvalidArgument unless the order key is 1..128 printable ASCII characters."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidArgument(f"order key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")


@asynccontextmanager
async def _depending_on(dependency: str) -> AsyncIterator[None]:
    """Re-raise an Unavailable from inside the block as one that names the dependency (and its path)."""
    try:
        yield
    except Unavailable as exc:
        failure = replace(exc.failure, dependency_path=exc.dependency_path or (dependency,))
        raise Unavailable(f"{dependency} is unavailable: {failure.detail}", failure=failure) from exc


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
        journal: OrderJournal | None = None,
        unreachable_payment: Callable[[], Payment] | None = None,
    ) -> None:
        self.catalog = catalog
        self.cart = cart
        self.currency = currency
        self.shipping = shipping
        self.payment = payment
        self.email = email
        self.journal = journal or OrderJournal()
        # The payment client charges go to while the paymentUnreachable flag is on (made on first use).
        self.unreachable_payment = unreachable_payment
        self._sagas: set[asyncio.Task[pb.OrderResult]] = set()

    # ---- pricing (no side effects) ----------------------------------------------------------

    async def _convert(self, amount: pb.Money, user_currency: str) -> pb.Money:
        """The amount in the user's currency; an unknown currency is the request's fault."""
        async with _depending_on("currency"):
            try:
                return await self.currency.convert(amount, user_currency)
            except InvalidArgument as exc:
                raise InvalidArgument(f"user_currency: {exc.failure.detail}") from exc

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

    @staticmethod
    def payment_unreachable() -> bool:
        """Whether the paymentUnreachable flag is on (evaluated on the current span, where it fires)."""
        return flags().boolean(PAYMENT_UNREACHABLE)

    def _payment_to_charge(self) -> Payment:
        """Where this charge goes: payment, or while the paymentUnreachable flag is on (read per charge, so
        switching it off takes effect with the next order) an address of payment's that does not answer."""
        if self.unreachable_payment is not None and self.payment_unreachable():
            trace.get_current_span().set_attribute("app.payment.unreachable", True)
            return self.unreachable_payment()
        return self.payment

    async def _charge(self, amount: pb.Money, card: pb.CreditCardInfo, order_id: str) -> str:
        """Charge the card; a rejected card is PAYMENT_DECLINED, telling the shopper the card's problem."""
        payment = self._payment_to_charge()
        async with _depending_on("payment"):
            try:
                return await payment.charge(amount, card, idempotency_key=order_id)
            except InvalidArgument as exc:
                said = f"{DECLINED}: {exc.public_message or exc.failure.detail}"
                problem = {"card_problem": exc.reason} if exc.reason else {}
                raise InvalidArgument(
                    said, reason=Reason.PAYMENT_DECLINED, public_message=said, metadata=problem
                ) from exc

    # ---- placing ----------------------------------------------------------------------------

    async def place_order(
        self,
        user_id: str,
        user_currency: str,
        address: pb.Address,
        email: str,
        card: pb.CreditCardInfo | None,
        order_key: str | None = None,
    ) -> pb.OrderResult:
        """Place the user's cart as an order, once per order key, and return it.

        A key already placed returns its order; a key being placed elsewhere is Aborted (its status
        tells the outcome later). Without a key every call is a new order, as in Online Boutique.
        """
        span = trace.get_current_span()
        span.add_event("request_start", {"app.user.currency": user_currency})
        validate_order_request(user_id, user_currency, address, email, card)
        assert card is not None
        if order_key is not None:
            check_order_key(order_key)
        key = order_key or f"unkeyed:{uuid.uuid4()}"
        request = pb.PlaceOrderRequest(
            user_id=user_id, user_currency=user_currency, address=address, email=email
        )
        for _ in range(3):
            order_id = str(uuid.uuid4())  # before the charge: it is the charge's idempotency key
            left = deadline.remaining()
            lease = (left if left is not None else 30.0) + LEASE_MARGIN
            claim, record = await asyncio.to_thread(
                self.journal.claim, key, order_id, user_id, request.SerializeToString(), lease
            )
            if claim is Claim.DONE:
                assert record.result is not None
                log.info("order repeated", extra={"order_id": record.order_id})
                span.add_event("order_repeated", {"app.order.id": record.order_id})
                return pb.OrderResult.FromString(record.result)
            if claim is Claim.BUSY and record.step is Step.VOIDING:
                raise Unavailable(  # its charge is being voided: payment is what has not answered
                    "the last try of this order is still being undone; try again in a moment", ("payment",)
                )
            if claim is Claim.BUSY:
                raise Aborted("this order is being placed right now; its status page shows how it ends")
            if claim is Claim.STALE:
                await self.resume(record)
                continue
            span.set_attribute("app.order.id", order_id)
            # The order runs as a task of its own: if the caller gives up (its call is cancelled), the
            # order still reaches a consistent end (undone, or completed once shipped) instead of
            # stopping wherever the cancellation found it.
            saga = asyncio.create_task(self._place(record, request, card))
            self._sagas.add(saga)
            saga.add_done_callback(self._saga_done)
            return await asyncio.shield(saga)
        raise Aborted("this order is being recovered; its status page shows how it ends")

    def _saga_done(self, saga: asyncio.Task[pb.OrderResult]) -> None:
        self._sagas.discard(saga)
        if not saga.cancelled():
            saga.exception()  # retrieved here: the caller that awaited it may have gone

    async def _place(
        self, record: OrderRecord, request: pb.PlaceOrderRequest, card: pb.CreditCardInfo
    ) -> pb.OrderResult:
        """The steps of one attempt, each journaled: price, charge, ship, then complete."""
        span = trace.get_current_span()
        try:
            with tracer.start_as_current_span("checkout: get cart"):
                async with _depending_on("cart"):
                    cart_items = await self.cart.get_cart(request.user_id)
            if not cart_items:
                raise InvalidArgument(
                    "cart is empty", reason=Reason.EMPTY_CART, public_message="cart is empty"
                )
            with tracer.start_as_current_span("checkout: price items") as step:
                step.set_attribute("app.cart.items.count", len(cart_items))
                order_items = await self._price_items(cart_items, request.user_currency)
            with tracer.start_as_current_span("checkout: quote shipping"):
                async with _depending_on("shipping"):
                    quote_usd = await self.shipping.get_quote(request.address, cart_items)
                shipping_cost = await self._convert(quote_usd, request.user_currency)
            total = money.total(
                [money.multiply(line.cost, line.item.quantity) for line in order_items] + [shipping_cost],
                request.user_currency,
            )
            span.add_event("prepared", {"app.order.items.count": len(order_items)})
            deadline.check("place the order", TIME_TO_FINISH)
        except (ShopError, DeadlineExceeded) as exc:
            reason = exc.reason if isinstance(exc, ShopError) else ""
            await self._end(record, Step.FAILED, f"not placed: {exc}", reason)
            _reraise(exc)
        try:
            with tracer.start_as_current_span("checkout: charge"):
                transaction_id = await self._charge(total, card, record.order_id)
        except InvalidArgument as exc:  # declined: nothing was charged
            await self._end(record, Step.FAILED, str(exc), exc.reason)
            raise
        except ShopError as exc:
            if exc.failure.code is None:  # refused by the mesh (breaker open, no instance): never sent
                await self._end(record, Step.FAILED, f"not placed, nothing was charged: {exc}")
                raise
            await self.undo(record, f"payment did not answer: {exc}")  # the charge may or may not stand
            raise
        except DeadlineExceeded as exc:
            await self.undo(record, f"payment did not answer: {exc}")
            _reraise(exc)
        span.add_event("charged", {"app.payment.transaction.id": transaction_id})
        if not await asyncio.to_thread(
            self.journal.advance, record, Step.CHARGED, transaction_id=transaction_id
        ):
            raise Aborted("another checkout took this order over; its status page shows how it ends")
        try:
            with tracer.start_as_current_span("checkout: ship"):
                deadline.check("ship the order")
                async with _depending_on("shipping"):
                    tracking_id = await self.shipping.ship_order(request.address, cart_items)
        except (ShopError, DeadlineExceeded) as exc:
            await self.undo(record, f"shipping failed: {exc}")
            _reraise(exc)
        span.set_attribute("app.shipping.tracking.id", tracking_id)
        order = pb.OrderResult(
            order_id=record.order_id,
            shipping_tracking_id=tracking_id,
            shipping_cost=shipping_cost,
            shipping_address=request.address,
            items=order_items,
        )
        shipped = await asyncio.to_thread(
            self.journal.advance, record, Step.SHIPPED, result=order.SerializeToString(), lease=OWN_TIME * 3
        )
        if not shipped:
            raise Aborted("another checkout took this order over; its status page shows how it ends")
        with deadline.detached(OWN_TIME):  # shipped: the order completes whatever the caller does
            await self._complete(record, request, order)
        amount = money.to_decimal(total)
        ORDERS.labels(request.user_currency).inc()
        REVENUE.labels(request.user_currency).inc(float(amount))
        span.add_event(
            "order_placed", {"app.order.total": str(amount), "app.order.currency": request.user_currency}
        )
        log.info(
            "order placed",
            extra={
                "order_id": order.order_id,
                "item_count": sum(line.item.quantity for line in order_items),
                "total": str(amount),
                "currency": request.user_currency,
                "email": mask_email(request.email),
                "transaction_id": transaction_id,
            },
        )
        return order

    async def _complete(
        self, record: OrderRecord, request: pb.PlaceOrderRequest, order: pb.OrderResult
    ) -> None:
        """After the shipment: empty the cart, send the confirmation, mark the order placed.

        A cart left full is noted on the order's span and in the journal; the order stands.
        """
        span = trace.get_current_span()
        with tracer.start_as_current_span("checkout: empty cart"):
            not_emptied = await self._empty_cart(request.user_id)
        note = ""
        if not_emptied is not None:
            span.set_attribute("app.cart.emptied", False)
            span.add_event(
                "cart_not_emptied", {"app.order.id": order.order_id, **not_emptied.failure.log_fields()}
            )
            note = f"placed, but the cart could not be emptied (its lines stay): {not_emptied}"
        with tracer.start_as_current_span("checkout: confirm"):
            await self._confirm(request.email, order)
        await self._end(record, Step.PLACED, note)

    async def _end(self, record: OrderRecord, step: Step, message: str, reason: str = "") -> None:
        """Journal the attempt's last step (a failure to write is logged: recovery settles it later)."""
        try:
            await asyncio.to_thread(self.journal.advance, record, step, message=message[:500], reason=reason)
        except Exception:
            log.exception("could not journal the order's end", extra={"order_id": record.order_id})

    async def undo(self, record: OrderRecord, reason: str) -> None:
        """Give the attempt up: void its charge (or forbid it, if it has not landed yet); not placed.

        The decision is journaled first, so it stands whatever happens next. Voiding runs on checkout's
        own time; when payment cannot be reached the recovery loop voids later, and the caller is told
        the order was not placed (Unavailable naming payment).
        """
        await asyncio.to_thread(self.journal.advance, record, Step.VOIDING, message=reason[:500])
        with tracer.start_as_current_span("checkout: void charge") as span, deadline.detached(OWN_TIME):
            try:
                async with _depending_on("payment"):
                    refunded, transaction_id = await self.payment.refund(record.order_id)
            except ShopError as exc:
                span.record_exception(exc)
                await asyncio.to_thread(self.journal.release, record, 2.0)
                log.warning(
                    "could not void a charge yet; retrying in the background",
                    extra={"order_id": record.order_id, "error": str(exc), **exc.failure.log_fields()},
                )
                raise Unavailable(
                    f"payment is unavailable: the order was not placed; a charge, if one was made, "
                    f"will be voided ({reason})",
                    exc.dependency_path or ("payment",),
                ) from exc
            span.set_attribute("app.payment.refunded", refunded)
        if refunded:
            VOIDED.inc()
            await self._end(record, Step.VOIDED, f"not placed, the charge was voided: {reason}")
            log.warning(
                "order undone, charge voided",
                extra={"order_id": record.order_id, "transaction_id": transaction_id, "reason": reason[:300]},
            )
        else:
            await self._end(record, Step.FAILED, f"not placed, nothing was charged: {reason}")

    # ---- status and recovery ----------------------------------------------------------------

    async def order_status(self, order_key: str, user_id: str) -> OrderStatus:
        """What became of the order placed under the key, for the shopper who placed it."""
        check_order_key(order_key)
        record = await asyncio.to_thread(self.journal.get, order_key)
        if record is None:
            # Never claimed: the request died on the way or expired unread (a late one is refused by
            # its deadline), so no order is or will be placed under this key.
            return OrderStatus(Step.FAILED, None, "No order was placed. Nothing was charged.")
        if record.user_id != user_id:
            return OrderStatus(None)
        if record.step is Step.PLACED and record.result is not None:
            return OrderStatus(Step.PLACED, pb.OrderResult.FromString(record.result))
        return OrderStatus(record.step, None, _for_the_shopper(record))

    async def resume(self, record: OrderRecord) -> None:
        """Finish or undo an order another checkout left open (it died, or stopped past its lease)."""
        owned = await asyncio.to_thread(self.journal.take_over, record, OWN_TIME * 3)
        if owned is None:
            return  # someone else is on it
        with tracer.start_as_current_span("checkout: recover order") as span:
            span.set_attributes({"app.order.id": owned.order_id, "app.order.step": owned.step.value})
            if owned.step is Step.SHIPPED and owned.result is not None:
                request = pb.PlaceOrderRequest.FromString(owned.request)
                with deadline.detached(OWN_TIME):
                    await self._complete(owned, request, pb.OrderResult.FromString(owned.result))
                RECOVERED.labels("completed").inc()
                log.warning("order left open completed", extra={"order_id": owned.order_id})
                return
            try:
                await self.undo(owned, owned.message or "checkout stopped before the order was shipped")
            except Unavailable:
                RECOVERED.labels("retry").inc()
                return
            RECOVERED.labels("undone").inc()

    async def recover(self) -> int:
        """Finish or undo every open order whose lease ran out; how many were handled."""
        handled = 0
        for record in await asyncio.to_thread(self.journal.stale):
            try:
                await self.resume(record)
            except Exception:
                log.exception("recovering an order failed", extra={"order_id": record.order_id})
            handled += 1
        return handled

    async def drain(self, timeout: float = OWN_TIME * 2) -> int:
        """Let orders in progress reach their end (at shutdown) for up to `timeout` seconds; how many did
        not (journaled, so the next checkout's recovery finishes or undoes them)."""
        if self._sagas:
            await asyncio.wait(list(self._sagas), timeout=timeout)
        return len(self._sagas)

    async def _empty_cart(self, user_id: str) -> ShopError | None:
        """Empty the cart after shipping; the failure, if it failed (on the current span, logged and
        counted: the order is already paid and shipped, so it stands)."""
        try:
            await self.cart.empty_cart(user_id)
        except ShopError as exc:
            CARTS_NOT_EMPTIED.inc()
            step = trace.get_current_span()
            step.record_exception(exc)
            step.set_status(trace.StatusCode.ERROR, f"cart not emptied: {str(exc)[:200]}")
            log.warning(
                "could not empty the cart after an order; the order stands, the cart keeps its lines",
                extra={"error": str(exc), **exc.failure.log_fields()},
            )
            return exc
        return None

    async def _confirm(self, email: str, order: pb.OrderResult) -> None:
        """Send the confirmation; a failure is logged and does not fail the order."""
        try:
            await self.email.send_order_confirmation(email, order)
        except ShopError as exc:
            log.warning(
                "order confirmation not sent",
                extra={
                    "order_id": order.order_id,
                    "email": mask_email(email),
                    "error": str(exc),
                    **exc.failure.log_fields(),
                },
            )


def _for_the_shopper(record: OrderRecord) -> str:
    """What the shopper may be told about an order that is not placed (or not yet)."""
    if record.step in (Step.VOIDED, Step.VOIDING):
        return "The order could not be completed. Its charge was voided: you will not pay for it."
    if record.step is Step.FAILED:
        # A declined card's message is for the shopper: it says what is wrong with the card.
        declined = record.reason == Reason.PAYMENT_DECLINED
        return (
            f"The {record.message}. Nothing was charged."
            if declined
            else ("The order could not be completed. Nothing was charged.")
        )
    return "The order is being placed."


def _reraise(exc: Exception) -> NoReturn:
    """Raise the failure on: a DeadlineExceeded as Unavailable (not placed in time), the rest as it is."""
    if isinstance(exc, DeadlineExceeded):
        raise Unavailable(f"checkout ran out of time: {exc}") from exc
    raise exc
