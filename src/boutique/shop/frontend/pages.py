"""Route handlers: gather what a page needs from the services, concurrently, and render it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

import grpc
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from boutique.mesh.failure import Failure
from boutique.shop import money
from boutique.shop.errors import InvalidArgument, NotFound, Reason, ShopError
from boutique.shop.frontend.clients import FrontendClients
from boutique.shop.frontend.failures import PageError, Problem
from boutique.shop.frontend.forms import (
    ORDER_KEY,
    SampleCheckout,
    new_order_key,
    parse_add_to_cart,
    parse_checkout,
    parse_currency,
    read_form,
    safe_return_path,
)
from boutique.shop.frontend.pricing import convert_all
from boutique.shop.frontend.rendering import Renderer
from boutique.shop.frontend.session import CURRENCIES, Session, session_of
from boutique.shop.frontend.settings import FrontendSettings
from boutique.shop.proto import demo_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RECOMMENDATIONS = 4
QUANTITIES = tuple(range(1, 11))


@dataclass(frozen=True)
class ProductCard:
    """A product with its price in the shown currency."""

    product: pb.Product
    price: pb.Money


@dataclass(frozen=True)
class Line:
    """A cart or order line: what, how many, and the line's price."""

    product_id: str
    name: str
    picture: str
    quantity: int
    price: pb.Money


@dataclass(frozen=True)
class AdView:
    """An ad ready for the page; `href` is empty unless the ad points inside the shop."""

    text: str
    href: str


async def optional(what: str, call: Awaitable[T]) -> T | None:
    """Await a call whose failure must not break the page; log and return None instead."""
    try:
        return await call
    except ShopError as exc:
        log.warning(
            "optional part left out", extra={"part": what, "error": str(exc), **exc.failure.log_fields()}
        )
        return None


def ad_view(ads: list[pb.Ad] | None) -> AdView | None:
    """The first ad, linked only when its URL is a path on this site."""
    if not ads:
        return None
    url = ads[0].redirect_url
    href = url if url.startswith("/") and not url.startswith("//") else ""
    return AdView(ads[0].text, href)


class Pages:
    """The shop's pages and form actions, bound to its service clients."""

    def __init__(
        self,
        clients: FrontendClients,
        settings: FrontendSettings,
        renderer: Renderer,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.renderer = renderer
        self.today = today

    async def _cart_count(self, session: Session) -> int | None:
        """Items in the cart for the header, or None when the cart service cannot say."""
        items = await optional("cart count", self.clients.cart.get_cart(session.id))
        return None if items is None else sum(item.quantity for item in items)

    async def _ad(self, context_keys: list[str]) -> AdView | None:
        """An ad for these keys, or None when the ad service fails."""
        return ad_view(await optional("ad", self.clients.ad.get_ads(context_keys)))

    async def _recommendations(self, session: Session, product: pb.Product) -> list[pb.Product]:
        """Up to four other products recommended alongside this one."""
        ids = await self.clients.recommendation.list_recommendations(session.id, [product.id])
        chosen = [i for i in dict.fromkeys(ids) if i != product.id][:MAX_RECOMMENDATIONS]
        return list(await asyncio.gather(*(self.clients.catalog.get_product(i) for i in chosen)))

    async def home(self, request: Request) -> Response:
        """GET /: every product with its price, an ad, and the cart count."""
        session = session_of(request)
        products, ad, count = await asyncio.gather(
            self.clients.catalog.list_products(), self._ad([]), self._cart_count(session)
        )
        prices = await convert_all(self.clients.currency, [p.price_usd for p in products], session.currency)
        cards = [ProductCard(p, price) for p, price in zip(products, prices.amounts, strict=True)]
        context = {"cards": cards, "ad": ad, "cart_count": count, "currency_note": prices.note}
        return self.renderer.page(request, "home.html", context)

    async def product(self, request: Request) -> Response:
        """GET /product/{id}: the product, its price, recommendations and an ad for its categories."""
        session = session_of(request)
        product_id = request.path_params["product_id"]
        try:
            product = await self.clients.catalog.get_product(product_id)
        except (NotFound, InvalidArgument):
            raise _unknown_product() from None
        prices, recommended, ad, count = await asyncio.gather(
            convert_all(self.clients.currency, [product.price_usd], session.currency),
            optional("recommendations", self._recommendations(session, product)),
            self._ad(list(product.categories)),
            self._cart_count(session),
        )
        context = {
            "product": product,
            "price": prices.amounts[0],
            "currency_note": prices.note,
            "quantities": QUANTITIES,
            "recommendations": recommended or [],
            "ad": ad,
            "cart_count": count,
        }
        return self.renderer.page(request, "product.html", context)

    async def cart(self, request: Request) -> Response:
        """/cart: GET shows the cart, POST adds to it."""
        if request.method == "POST":
            return await self.add_to_cart(request)
        return await self.view_cart(request)

    async def view_cart(self, request: Request) -> Response:
        """GET /cart: lines, shipping quote, total and the prefilled checkout form."""
        session = session_of(request)
        sample = SampleCheckout.for_today(self.today())
        items = await self.clients.cart.get_cart(session.id)
        context: dict[str, object] = {
            "lines": [],
            "shipping": None,
            "total": None,
            "cart_count": sum(item.quantity for item in items),
            "sample": sample,
            "months": tuple(range(1, 13)),
            "years": tuple(range(self.today().year, self.today().year + 5)),
            "order_key": new_order_key(),
        }
        if items:
            products, quote = await asyncio.gather(
                self.clients.catalog.list_products(),
                self.clients.shipping.get_quote(sample.address(), items),
            )
            by_id = {p.id: p for p in products}
            known = [(item, by_id[item.product_id]) for item in items if item.product_id in by_id]
            prices = await convert_all(
                self.clients.currency, [p.price_usd for _, p in known] + [quote], session.currency
            )
            *unit_prices, shipping = prices.amounts
            lines = [
                Line(p.id, p.name, p.picture, item.quantity, money.multiply(unit, item.quantity))
                for (item, p), unit in zip(known, unit_prices, strict=True)
            ]
            context.update(
                lines=lines,
                shipping=shipping,
                total=money.total([line.price for line in lines] + [shipping], prices.currency),
                currency_note=prices.note,
            )
        return self.renderer.page(request, "cart.html", context)

    async def add_to_cart(self, request: Request) -> Response:
        """POST /cart: add a known product in quantity 1..10, then back to the cart."""
        session = session_of(request)
        order = parse_add_to_cart(await read_form(request, self.settings.max_body_bytes))
        try:
            product = await self.clients.catalog.get_product(order.product_id)
        except (NotFound, InvalidArgument):
            raise _unknown_product() from None
        await self.clients.cart.add_item(session.id, product.id, order.quantity)
        return RedirectResponse("/cart", status_code=302)

    async def empty_cart(self, request: Request) -> Response:
        """POST /cart/empty: drop every line, then home."""
        await self.clients.cart.empty_cart(session_of(request).id)
        return RedirectResponse("/", status_code=302)

    async def checkout(self, request: Request) -> Response:
        """POST /cart/checkout: validate, place the order (once per order key), show the confirmation.

        When checkout does not answer (no reply in time, the call cut, the order still in progress),
        the outcome is unknown: the page says so and links to the order's status page instead of
        inviting a second try.
        """
        session = session_of(request)
        details = parse_checkout(await read_form(request, self.settings.max_body_bytes), self.today())
        try:
            order = await self.clients.checkout.place_order(
                session.id,
                session.currency,
                details.address(),
                details.email,
                details.card(),
                order_key=details.order_key,
            )
        except InvalidArgument as exc:
            raise _order_refused(exc.failure) from None
        except ShopError as exc:
            if exc.failure.code is None:  # never sent: this request placed nothing, an earlier one may have
                log.warning(
                    "checkout unreachable",
                    extra={"order_key": details.order_key, "error": str(exc), **exc.failure.log_fields()},
                )
                return self._order_pending(request, details.order_key, 503)
            if _outcome_unknown(exc.failure):
                log.warning(
                    "order outcome unknown",
                    extra={"order_key": details.order_key, "error": str(exc), **exc.failure.log_fields()},
                )
                return self._order_pending(request, details.order_key, 504)
            raise
        return await self._confirmation(request, order, f"A confirmation is on its way to {details.email}.")

    async def _confirmation(self, request: Request, order: pb.OrderResult, note: str) -> Response:
        """The order page: lines with product names, shipping, total, ids."""
        products = await optional("product names", self.clients.catalog.list_products())
        by_id = {p.id: p for p in products or []}
        lines = []
        for entry in order.items:
            known = by_id.get(entry.item.product_id)
            lines.append(
                Line(
                    entry.item.product_id,
                    known.name if known else entry.item.product_id,
                    known.picture if known else "",
                    entry.item.quantity,
                    money.multiply(entry.cost, entry.item.quantity),
                )
            )
        currency = order.shipping_cost.currency_code or "USD"
        context = {
            "order": order,
            "lines": lines,
            "shipping": order.shipping_cost,
            "total": money.total([line.price for line in lines] + [order.shipping_cost], currency),
            "note": note,
            "cart_count": 0,
        }
        return self.renderer.page(request, "order.html", context)

    def _order_pending(self, request: Request, order_key: str, status: int) -> Response:
        """The page for an order whose outcome is not known yet: what that means, and where to look.

        504: checkout took the order but did not answer in time. 503: checkout could not be reached
        (breaker open, no instance), so this request placed nothing, yet an earlier submission of the
        same form (a double click, a reload) may have: the shopper is sent to the status page either way.
        202: the order is being placed.
        """
        state = {504: "unknown", 503: "unreachable"}.get(status, "placing")
        headers = {"Retry-After": "3"} if status == 503 else None
        context = {"order_key": order_key, "state": state}
        return self.renderer.page(request, "order_status.html", context, status=status, headers=headers)

    async def order_status(self, request: Request) -> Response:
        """GET /order/{order_key}: what became of an order (only for the shopper who placed it)."""
        session = session_of(request)
        order_key = request.path_params["order_key"]
        if not ORDER_KEY.fullmatch(order_key):
            raise _unknown_order()
        try:
            status = await self.clients.checkout.get_order(order_key, session.id)
        except ShopError as exc:
            log.warning(
                "order status unknown",
                extra={"order_key": order_key, "error": str(exc), **exc.failure.log_fields()},
            )
            return self._order_pending(request, order_key, 503)
        if status.state == pb.ORDER_STATE_PLACED:
            return await self._confirmation(
                request, status.order, "A confirmation was sent to your email address."
            )
        if status.state == pb.ORDER_STATE_PLACING:
            return self._order_pending(request, order_key, 202)
        if status.state == pb.ORDER_STATE_NOT_PLACED:
            context = {
                "order_key": order_key,
                "state": "not_placed",
                "message": status.message,
            }
            return self.renderer.page(request, "order_status.html", context)
        raise _unknown_order()

    async def set_currency(self, request: Request) -> Response:
        """POST /setCurrency: remember a supported currency, then back where the shopper was."""
        session = session_of(request)
        form = await read_form(request, self.settings.max_body_bytes)
        codes = await optional("supported currencies", self.clients.currency.supported_currencies())
        session.set_currency(parse_currency(form, set(codes) if codes is not None else set(CURRENCIES)))
        target = safe_return_path(request.headers.get("referer"), request.headers.get("host"))
        return RedirectResponse(target, status_code=302)

    async def logout(self, request: Request) -> Response:
        """GET /logout: expire the cookies, then home."""
        session_of(request).end()
        return RedirectResponse("/", status_code=302)

    async def healthz(self, request: Request) -> Response:
        """GET /_healthz: the process is up."""
        return PlainTextResponse("ok")


def _order_refused(failure: Failure) -> PageError:
    """The 422 page for an order checkout refused: a declined card (its reason), or e.g. an empty cart.

    The problem shown is what checkout says the shopper may be told, else its message for the caller.
    """
    said = failure.public_message or failure.detail
    if failure.reason == Reason.PAYMENT_DECLINED:
        hint = "Your cart is unchanged. Check the card details, or use another card."
        return PageError(422, "Payment declined", hint, [Problem("payment", said)])
    hint = "The order was not placed and nothing was charged."
    return PageError(422, "Cannot place the order", hint, [Problem("order", said)])


def _outcome_unknown(failure: Failure) -> bool:
    """Whether a failed PlaceOrder may still have placed the order.

    Checkout answered with a failure (it names itself in its trailers): the order was not placed. No
    answer in time, the call cut on the way, or the order still in progress (ABORTED): it may have been.
    (A call the mesh never sent is told apart before: see `Pages.checkout`.)
    """
    if failure.code in (
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    ):
        return True
    return not failure.answered


def _unknown_order() -> PageError:
    """The 404 page for an order reference this shopper has no order under."""
    hint = (
        "There is no order of yours under this reference. Your cart page has what you have not ordered yet."
    )
    return PageError(404, "Unknown order", hint, [Problem("order", "unknown order reference")])


def _unknown_product() -> PageError:
    """The 404 page for a product id the catalog does not know."""
    hint = "That product is not in the catalog. Pick one from the home page."
    return PageError(404, "Unknown product", hint, [Problem("product_id", "unknown product")])
