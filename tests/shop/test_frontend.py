"""The web frontend over real in-process gRPC backends: a whole shopping trip, bad input, failures."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx
import pytest

from boutique.mesh.logs import JsonFormatter
from boutique.shop import money
from boutique.shop.ad import server as ad_server
from boutique.shop.ad.client import HOUSE_AD
from boutique.shop.cart import server as cart_server
from boutique.shop.checkout import server as checkout_server
from boutique.shop.currency import server as currency_server
from boutique.shop.email import server as email_server
from boutique.shop.frontend import FrontendClients, FrontendSettings, create_app
from boutique.shop.frontend import server as frontend_server
from boutique.shop.payment import server as payment_server
from boutique.shop.productcatalog import server as catalog_server
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.productcatalog.service import load_products
from boutique.shop.recommendation import server as recommendation_server
from boutique.shop.recommendation.client import FEATURED
from boutique.shop.services import SERVICES
from boutique.shop.shipping import server as shipping_server
from tests.support import serving

BASE_URL = "http://shop.test"
INSTANCE = "frontend-test"
OBSERVATORY = "http://observatory.test"
SUNGLASSES = "OLJCESPC7Z"
WATCH = "1YMWWN1N4O"
CARD_DIGITS = "4432801561520454"
EMAIL = "someone@example.com"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclass
class Shop:
    """The frontend app over real backends, an HTTP client for it, and a way to stop single backends."""

    http: httpx.AsyncClient
    clients: FrontendClients
    stacks: dict[str, AsyncExitStack] = field(default_factory=dict)

    async def stop(self, name: str) -> None:
        """Stop one backend server (its address stays configured, so calls to it fail)."""
        await self.stacks.pop(name).aclose()


@pytest.fixture
async def shop(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Shop]:
    """Every backend on loopback, checkout and recommendation wired by their address variables."""
    for variable in ("REDIS_ADDR", "EMAIL_OUTBOX_DIR", "EXTRA_LATENCY", "OBSERVATORY_URL"):
        monkeypatch.delenv(variable, raising=False)
    stacks: dict[str, AsyncExitStack] = {}
    closers: list[Callable[[], object]] = []

    async def start(name: str, bindings: list) -> None:
        """Serve one backend and point its address variable at it."""
        stack = AsyncExitStack()
        endpoints = await stack.enter_async_context(serving(name, bindings))
        stacks[name] = stack
        address_variable = SERVICES[name].address_variable
        assert address_variable is not None
        monkeypatch.setenv(address_variable, endpoints.addresses[0])

    try:
        await start("productcatalog", catalog_server.bindings())
        await start("currency", currency_server.bindings())
        await start("cart", cart_server.bindings())
        await start("shipping", shipping_server.bindings())
        await start("payment", payment_server.bindings())
        await start("email", email_server.bindings())
        await start("ad", ad_server.bindings())
        recommendation_catalog = CatalogClient.from_env()
        closers.append(recommendation_catalog.close)
        await start("recommendation", recommendation_server.bindings(recommendation_catalog))
        checkout_clients = checkout_server.CheckoutClients.from_env()
        closers.append(checkout_clients.close)
        await start("checkout", checkout_server.bindings(checkout_clients.service()))

        clients = FrontendClients.from_env()
        closers.append(clients.close)
        settings = FrontendSettings(instance_id=INSTANCE, observatory_url=OBSERVATORY)
        transport = httpx.ASGITransport(app=create_app(clients, settings))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield Shop(http, clients, stacks)
    finally:
        for close in reversed(closers):
            await close()  # type: ignore[misc]
        for stack in reversed(list(stacks.values())):
            await stack.aclose()


class FormFields(HTMLParser):
    """Collects the fields of one form (by action) as a browser would submit them."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self.inside = False
        self.select: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = values.get("action") == self.action
        elif self.inside and tag == "input" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")
        elif self.inside and tag == "select":
            self.select = values["name"]
        elif self.inside and tag == "option" and self.select and "selected" in values:
            self.fields[self.select] = values["value"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None


def form_fields(html: str, action: str) -> dict[str, str]:
    """The prefilled fields of the form posting to `action`."""
    parser = FormFields(action)
    parser.feed(html)
    return parser.fields


def cart_count(html: str) -> int:
    """The item count shown in the header's cart link."""
    match = re.search(r'data-cart-count="(\d+)"', html)
    assert match, "no cart count in the header"
    return int(match.group(1))


def problem_fields(html: str) -> list[str]:
    """The field names the error page lists as problems."""
    return re.findall(r"<li><strong>([^<]+)</strong>:", html)


async def home_still_works(shop: Shop) -> None:
    """After any failure the shop keeps serving its home page."""
    response = await shop.http.get("/")
    assert response.status_code == 200
    assert response.text.count('class="card"') == 9


async def add_to_cart(shop: Shop, product_id: str, quantity: int) -> None:
    """Add through the form and check the redirect to /cart."""
    response = await shop.http.post("/cart", data={"product_id": product_id, "quantity": str(quantity)})
    assert response.status_code == 302, response.text
    assert response.headers["location"] == "/cart"


async def checkout_form(shop: Shop) -> dict[str, str]:
    """The cart page's prefilled checkout form."""
    response = await shop.http.get("/cart")
    assert response.status_code == 200
    return form_fields(response.text, "/cart/checkout")


async def test_shopping_trip_from_home_to_confirmation(shop: Shop) -> None:
    home = await shop.http.get("/")
    assert home.status_code == 200
    assert home.headers["x-served-by"] == INSTANCE
    session = home.cookies.get("shop_session-id")
    assert session and UUID.fullmatch(session)
    set_cookie = home.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    products = load_products()
    assert len(re.findall(r'class="card" href="/product/', home.text)) == 9
    for product in products:
        assert f'href="/product/{product.id}"' in home.text
        assert product.picture in home.text
        assert f"${product.price_usd}" in home.text
    assert 'class="ad"' in home.text
    assert cart_count(home.text) == 0
    assert f"{OBSERVATORY}" in home.text and INSTANCE in home.text

    page = await shop.http.get(f"/product/{SUNGLASSES}")
    assert page.status_code == 200
    assert "Horizon Sunglasses" in page.text and "$19.99" in page.text
    assert [int(n) for n in re.findall(r'<option value="(\d+)">', page.text)] == list(range(1, 11))
    recommended = re.findall(r'data-recommendation="([A-Z0-9]+)"', page.text)
    assert 1 <= len(recommended) <= 4
    assert SUNGLASSES not in recommended and set(recommended) <= {p.id for p in products}
    assert 'class="ad"' in page.text
    assert home.cookies.get("shop_session-id") == shop.http.cookies.get("shop_session-id")

    await add_to_cart(shop, SUNGLASSES, 2)
    cart = await shop.http.get("/cart")
    assert cart_count(cart.text) == 2
    assert "Quantity 2" in cart.text
    assert "$39.98" in cart.text and "$8.99" in cart.text and "$48.97" in cart.text

    switched = await shop.http.post(
        "/setCurrency", data={"currency_code": "EUR"}, headers={"referer": f"{BASE_URL}/cart"}
    )
    assert switched.status_code == 302 and switched.headers["location"] == "/cart"
    assert shop.http.cookies.get("shop_currency") == "EUR"

    unit_eur = await shop.clients.currency.convert(money.usd("19.99"), "EUR")
    shipping_eur = await shop.clients.currency.convert(money.usd("8.99"), "EUR")
    line_eur = money.multiply(unit_eur, 2)
    total_eur = money.total([line_eur, shipping_eur], "EUR")
    cart = await shop.http.get("/cart")
    assert "$" not in re.sub(r"<option[^>]*>[^<]*</option>", "", cart.text.split("<main", 1)[1])
    for amount in (line_eur, shipping_eur, total_eur):
        assert money.display(amount) in cart.text
    watch_eur = await shop.clients.currency.convert(money.usd("109.99"), "EUR")
    home = await shop.http.get("/")
    assert money.display(watch_eur).startswith("€") and money.display(watch_eur) in home.text
    assert "$109.99" not in home.text

    fields = form_fields(cart.text, "/cart/checkout")
    assert fields["email"] == EMAIL
    assert fields["street_address"] == "1600 Amphitheatre Parkway" and fields["zip_code"] == "94043"
    assert re.sub(r"\D", "", fields["credit_card_number"]) == CARD_DIGITS
    assert int(fields["credit_card_expiration_year"]) > datetime.date.today().year
    assert fields["credit_card_cvv"] == "672"
    confirmation = await shop.http.post("/cart/checkout", data=fields)
    assert confirmation.status_code == 200, confirmation.text
    order_id = re.search(r'class="order-id">([^<]+)<', confirmation.text)
    tracking_id = re.search(r'class="tracking-id">([^<]+)<', confirmation.text)
    assert order_id and UUID.fullmatch(order_id.group(1))
    assert tracking_id and tracking_id.group(1).strip()
    shipping_shown = re.search(r'class="shipping">([^<]+)<', confirmation.text)
    assert shipping_shown and shipping_shown.group(1) == money.display(shipping_eur)
    total_shown = re.search(r'class="total">([^<]+)<', confirmation.text)
    assert total_shown and total_shown.group(1) == money.display(total_eur)
    assert "Horizon Sunglasses" in confirmation.text and "Continue shopping" in confirmation.text

    emptied = await shop.http.get("/cart")
    assert cart_count(emptied.text) == 0 and "Your cart is empty" in emptied.text


async def test_add_to_cart_accumulates_and_empty_cart(shop: Shop) -> None:
    await add_to_cart(shop, SUNGLASSES, 1)
    await add_to_cart(shop, SUNGLASSES, 3)
    await add_to_cart(shop, WATCH, 1)
    cart = await shop.http.get("/cart")
    assert cart_count(cart.text) == 5 and "Quantity 4" in cart.text
    emptied = await shop.http.post("/cart/empty")
    assert emptied.status_code == 302 and emptied.headers["location"] == "/"
    assert cart_count((await shop.http.get("/")).text) == 0


def _checkout_cases() -> list[tuple[str, str]]:
    """(field, bad value) pairs, each of which must be refused with a 422 naming the field."""
    year = datetime.date.today().year
    return [
        ("email", "not-an-email"),
        ("email", "someone@"),
        ("email", ""),
        ("street_address", ""),
        ("street_address", "x" * 257),
        ("city", "   "),
        ("city", "c" * 300),
        ("state", ""),
        ("country", ""),
        ("country", "line\nbreak"),
        ("zip_code", "abc"),
        ("zip_code", "-1"),
        ("zip_code", "100000000"),
        ("zip_code", ""),
        ("credit_card_number", "4432 8015 615"),
        ("credit_card_number", "4432 8015 6152 0454 1234 5"),
        ("credit_card_number", "4432-8015-6152-04x4"),
        ("credit_card_expiration_month", "0"),
        ("credit_card_expiration_month", "13"),
        ("credit_card_expiration_month", "jan"),
        ("credit_card_expiration_year", str(year - 1)),
        ("credit_card_expiration_year", "soon"),
        ("credit_card_expiration_year", "99999999999"),
        ("credit_card_cvv", "12"),
        ("credit_card_cvv", "12345"),
        ("credit_card_cvv", "abc"),
    ]


@pytest.mark.parametrize(("name", "value"), _checkout_cases())
async def test_checkout_field_out_of_range_is_422_naming_it(shop: Shop, name: str, value: str) -> None:
    await add_to_cart(shop, WATCH, 1)
    fields = await checkout_form(shop)
    fields[name] = value
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 422
    assert problem_fields(response.text) == [name]
    assert CARD_DIGITS not in response.text and "Traceback" not in response.text
    assert cart_count((await shop.http.get("/cart")).text) == 1, "a refused checkout keeps the cart"
    await home_still_works(shop)


def problem_messages(html: str) -> dict[str, str]:
    """The error page's problems as field -> message."""
    return dict(re.findall(r"<li><strong>([^<]+)</strong>: ([^<]*)</li>", html))


async def test_card_expiring_70_years_ahead_is_charged(shop: Shop) -> None:
    """Online Boutique's load generator sends expiry years up to 70 years ahead; they must be charged."""
    await add_to_cart(shop, WATCH, 1)
    fields = await checkout_form(shop)
    fields["credit_card_expiration_year"] = str(datetime.date.today().year + 70)
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 200, response.text
    order_id = re.search(r'class="order-id">([^<]+)<', response.text)
    assert order_id and UUID.fullmatch(order_id.group(1))
    assert cart_count((await shop.http.get("/cart")).text) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("999", "the expiry year must have four digits, like {next}"),
        ("12345", "the expiry year must have four digits, like {next}"),
        ("99", "the expiry year must have four digits, like {next}"),
        ("", "the expiry year must have four digits, like {next}"),
        ("{last}", "the card has expired: the expiry year must be {this} or later"),
    ],
)
async def test_expiry_year_page_says_what_to_fix(shop: Shop, value: str, message: str) -> None:
    year = datetime.date.today().year
    names = {"last": year - 1, "this": year, "next": year + 1}
    await add_to_cart(shop, WATCH, 1)
    fields = await checkout_form(shop)
    fields["credit_card_expiration_year"] = value.format(**names)
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 422
    assert problem_messages(response.text) == {"credit_card_expiration_year": message.format(**names)}
    assert cart_count((await shop.http.get("/cart")).text) == 1


async def test_checkout_lists_every_problem_at_once(shop: Shop) -> None:
    fields = {"email": "nope", "zip_code": "x", "credit_card_cvv": "1"}
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 422
    assert set(problem_fields(response.text)) == {
        "email",
        "street_address",
        "zip_code",
        "city",
        "state",
        "country",
        "credit_card_number",
        "credit_card_expiration_month",
        "credit_card_expiration_year",
        "credit_card_cvv",
    }


@pytest.mark.parametrize(
    ("number", "reason"),
    [("3782 822463 10005", "American Express"), ("4432-8015-6152-0455", "")],
)
async def test_payment_decline_is_422_and_keeps_the_cart(shop: Shop, number: str, reason: str) -> None:
    await add_to_cart(shop, WATCH, 2)
    fields = await checkout_form(shop)
    fields["credit_card_number"] = number
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 422
    assert "payment declined: " in response.text and reason in response.text
    assert problem_fields(response.text) == ["payment"]
    assert re.sub(r"\D", "", number) not in response.text
    assert cart_count((await shop.http.get("/cart")).text) == 2
    await home_still_works(shop)


async def test_the_decline_page_lists_what_payment_lets_the_shopper_know(shop: Shop) -> None:
    await add_to_cart(shop, WATCH, 1)
    fields = dict(await checkout_form(shop), credit_card_number="5555 5555 5555 4444 1")
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 422 and "<h1>Payment declined</h1>" in response.text
    assert problem_messages(response.text) == {
        "payment": "payment declined: credit card number is not valid (Luhn check failed): check for typos"
    }


async def test_an_error_page_lists_what_the_failing_service_lets_the_shopper_know(shop: Shop) -> None:
    await add_to_cart(shop, WATCH, 1)
    fields = await checkout_form(shop)
    session_id = shop.http.cookies["shop_session-id"]
    await shop.clients.cart.add_item(session_id, "GONE000000", 1)  # a product the catalog does not have
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 404 and "<h1>Not found</h1>" in response.text
    assert problem_messages(response.text) == {"request": "that product is not in the catalog"}


async def test_checkout_with_an_empty_cart_is_refused(shop: Shop) -> None:
    fields = await checkout_form(shop)
    assert fields == {}, "an empty cart offers no checkout form"
    await add_to_cart(shop, WATCH, 1)
    fields = await checkout_form(shop)
    await shop.http.post("/cart/empty")
    response = await shop.http.post("/cart/checkout", data=fields)
    assert response.status_code == 422 and "cart is empty" in response.text


@pytest.mark.parametrize("quantity", ["0", "11", "abc", "", "-1", "1.5"])
async def test_bad_quantity_is_422_naming_it(shop: Shop, quantity: str) -> None:
    response = await shop.http.post("/cart", data={"product_id": SUNGLASSES, "quantity": quantity})
    assert response.status_code == 422
    assert problem_fields(response.text) == ["quantity"]
    assert cart_count((await shop.http.get("/cart")).text) == 0
    await home_still_works(shop)


async def test_missing_product_id_is_422(shop: Shop) -> None:
    response = await shop.http.post("/cart", data={"quantity": "1"})
    assert response.status_code == 422 and problem_fields(response.text) == ["product_id"]


async def test_unknown_product_is_404(shop: Shop) -> None:
    response = await shop.http.post("/cart", data={"product_id": "NOSUCHTHING", "quantity": "1"})
    assert response.status_code == 404 and "unknown product" in response.text
    page = await shop.http.get("/product/NOSUCHTHING")
    assert page.status_code == 404 and "unknown product" in page.text
    assert page.headers["x-served-by"] == INSTANCE
    await home_still_works(shop)


@pytest.mark.parametrize("code", ["XYZ", "CHF", "eur", ""])
async def test_unknown_currency_is_422(shop: Shop, code: str) -> None:
    response = await shop.http.post("/setCurrency", data={"currency_code": code})
    assert response.status_code == 422
    assert problem_fields(response.text) == ["currency_code"]
    assert shop.http.cookies.get("shop_currency") is None
    await home_still_works(shop)


@pytest.mark.parametrize(
    ("referer", "location"),
    [
        (f"{BASE_URL}/product/{WATCH}", f"/product/{WATCH}"),
        ("/cart", "/cart"),
        ("http://elsewhere.test/phish", "/"),
        ("//elsewhere.test/phish", "/"),
        ("javascript:alert(1)", "/"),
        (None, "/"),
    ],
)
async def test_set_currency_goes_back_only_within_the_site(
    shop: Shop, referer: str | None, location: str
) -> None:
    headers = {"referer": referer} if referer else {}
    response = await shop.http.post("/setCurrency", data={"currency_code": "JPY"}, headers=headers)
    assert response.status_code == 302 and response.headers["location"] == location
    assert shop.http.cookies.get("shop_currency") == "JPY"
    assert "¥" in (await shop.http.get("/")).text


async def test_body_over_64_kib_is_413(shop: Shop) -> None:
    padding = "x" * (65 * 1024)
    response = await shop.http.post("/cart", data={"product_id": SUNGLASSES, "quantity": "1", "pad": padding})
    assert response.status_code == 413 and "Request too large" in response.text

    async def chunks() -> AsyncIterator[bytes]:
        """A body over the limit, sent without a Content-Length."""
        yield b"product_id=" + SUNGLASSES.encode() + b"&quantity=1&pad="
        for _ in range(70):
            yield b"y" * 1024

    streamed = await shop.http.post(
        "/cart/checkout",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    assert cart_count((await shop.http.get("/cart")).text) == 0
    await home_still_works(shop)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"product_id=OLJCESPC7Z&quantity=%zz", "application/x-www-form-urlencoded"),
        (b"product_id=OLJCESPC7Z&quantity=1&quantity=2", "application/x-www-form-urlencoded"),
        (b"product_id=OLJCESPC7Z&quantity", "application/x-www-form-urlencoded"),
        ("product_id=\u00e9&quantity=1".encode(), "application/x-www-form-urlencoded"),
        (b"product_id=%FF%FE&quantity=1", "application/x-www-form-urlencoded"),
        (b'{"product_id": "OLJCESPC7Z", "quantity": 1}', "application/json"),
        (b"product_id=OLJCESPC7Z&quantity=1", ""),
        (b"--x\r\nbroken", "multipart/form-data"),
    ],
)
async def test_malformed_form_is_400(shop: Shop, body: bytes, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await shop.http.post("/cart", content=body, headers=headers)
    assert response.status_code == 400
    assert problem_fields(response.text) == ["form"]
    await home_still_works(shop)


async def test_multipart_text_form_is_accepted_but_files_are_not(shop: Shop) -> None:
    response = await shop.http.post(
        "/cart", files={"product_id": (None, SUNGLASSES), "quantity": (None, "2")}
    )
    assert response.status_code == 302
    upload = await shop.http.post(
        "/cart", data={"quantity": "1"}, files={"product_id": ("id.txt", b"OLJCESPC7Z", "text/plain")}
    )
    assert upload.status_code == 400
    assert cart_count((await shop.http.get("/cart")).text) == 2


async def test_unknown_route_and_wrong_method(shop: Shop) -> None:
    missing = await shop.http.get("/no/such/page")
    assert missing.status_code == 404 and "Page not found" in missing.text
    assert missing.headers["x-served-by"] == INSTANCE
    wrong = await shop.http.get("/cart/checkout")
    assert wrong.status_code == 405 and "POST" in wrong.headers["allow"]
    put = await shop.http.put("/cart", content=b"")
    assert put.status_code == 405 and set(put.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    await home_still_works(shop)


async def test_invalid_cookies_are_replaced(shop: Shop) -> None:
    shop.http.cookies.set("shop_session-id", "not-a-uuid", domain="shop.test")
    shop.http.cookies.set("shop_currency", "XXX", domain="shop.test")
    response = await shop.http.get("/")
    assert response.status_code == 200
    new_session = response.cookies.get("shop_session-id")
    assert new_session and UUID.fullmatch(new_session)
    assert response.cookies.get("shop_currency") == "USD"
    assert "$109.99" in response.text

    again = await shop.http.get("/")
    assert "shop_session-id" not in again.headers.get("set-cookie", ""), "a valid session is kept"


async def test_logout_expires_the_cookies(shop: Shop) -> None:
    await shop.http.post("/setCurrency", data={"currency_code": "GBP"})
    response = await shop.http.get("/logout")
    assert response.status_code == 302 and response.headers["location"] == "/"
    expired = response.headers.get_list("set-cookie")
    assert {c.split("=", 1)[0] for c in expired} == {"shop_session-id", "shop_currency"}
    assert all("max-age=0" in c.lower() for c in expired)


async def test_health_and_static_files(shop: Shop) -> None:
    health = await shop.http.get("/_healthz")
    assert health.status_code == 200 and health.text == "ok"
    assert "set-cookie" not in health.headers
    paths = [p.picture for p in load_products()] + ["/static/img/logo.svg", "/static/css/shop.css"]
    for path in paths:
        response = await shop.http.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-served-by"] == INSTANCE
    picture = await shop.http.get(load_products()[0].picture)
    assert picture.headers["content-type"].startswith("image/svg+xml") and b"<svg" in picture.content
    missing = await shop.http.get("/static/img/products/nothing.svg")
    assert missing.status_code == 404


async def test_recommendations_and_ads_fall_back_when_down(shop: Shop) -> None:
    await shop.stop("recommendation")
    await shop.stop("ad")
    page = await shop.http.get(f"/product/{WATCH}")
    assert page.status_code == 200
    assert "Meridian Watch" in page.text and "$109.99" in page.text
    shown = re.findall(r'data-recommendation="([^"]+)"', page.text)
    assert shown and set(shown) <= set(FEATURED) - {WATCH}, "featured products stand in for recommendations"
    assert HOUSE_AD.text in page.text
    assert (await shop.http.get("/")).status_code == 200


async def test_currency_down_shows_usd_with_a_note(shop: Shop) -> None:
    await shop.http.post("/setCurrency", data={"currency_code": "EUR"})
    await add_to_cart(shop, WATCH, 1)
    await shop.stop("currency")
    home = await shop.http.get("/")
    assert home.status_code == 200
    assert "$109.99" in home.text and "Prices are shown in USD" in home.text
    cart = await shop.http.get("/cart")
    assert cart.status_code == 200 and "$118.98" in cart.text and "Prices are shown in USD" in cart.text


async def test_cart_down_is_503_with_a_trace_id(shop: Shop) -> None:
    await shop.stop("cart")
    response = await shop.http.get("/cart", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 503
    assert f'href="{OBSERVATORY}/trace/{TRACE_ID}"' in response.text
    assert "the cart service" in response.text
    assert "Traceback" not in response.text and 'File "' not in response.text

    added = await shop.http.post("/cart", data={"product_id": SUNGLASSES, "quantity": "1"})
    assert added.status_code == 503
    fresh = re.search(r'class="trace-id">([0-9a-f]+)<', added.text)
    assert fresh and len(fresh.group(1)) == 32 and fresh.group(1) != TRACE_ID
    assert "Traceback" not in added.text

    home = await shop.http.get("/")
    assert home.status_code == 200, "the home page does without the cart count"
    assert "data-cart-count" not in home.text


async def test_a_failed_dependency_is_logged_with_the_failures_fields(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    await shop.stop("cart")
    caplog.set_level(logging.INFO)
    response = await shop.http.get("/cart", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 503
    formatter = JsonFormatter("frontend", INSTANCE)
    lines = [
        json.loads(formatter.format(r)) for r in caplog.records if r.name.startswith("boutique.shop.frontend")
    ]
    (failed,) = [line for line in lines if line["event"] == "request failed: Service unavailable"]
    assert failed["failed_dependency"] == "cart" and failed["grpc_code"] == "UNAVAILABLE"
    assert failed["trace_id"] == TRACE_ID and "reason" not in failed


async def test_unexpected_error_is_a_500_page_without_traceback(shop: Shop) -> None:
    await shop.clients.catalog.dependency.start_and_wait()
    for channel, _stub in shop.clients.catalog.dependency.connections():
        await channel.close()  # a closed channel raises a non-gRPC error on use
    response = await shop.http.get("/", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 500
    assert TRACE_ID in response.text and "Traceback" not in response.text
    assert response.headers["x-served-by"] == INSTANCE
    assert (await shop.http.get("/_healthz")).text == "ok"


async def test_failed_requests_log_one_json_line_without_card_data(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    await add_to_cart(shop, WATCH, 1)
    fields = await checkout_form(shop)
    caplog.set_level(logging.INFO)
    caplog.clear()
    declined = dict(fields, credit_card_number="4432-8015-6152-0455")
    assert (await shop.http.post("/cart/checkout", data=declined)).status_code == 422
    invalid = dict(fields, credit_card_cvv="12345", email="jane.doe@example")
    assert (await shop.http.post("/cart/checkout", data=invalid)).status_code == 422
    formatter = JsonFormatter("frontend", INSTANCE)
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("boutique.shop.frontend")]
    failures = [json.loads(line) for line in lines if json.loads(line)["event"].startswith("request failed")]
    assert [f["status"] for f in failures] == [422, 422]
    assert failures[1]["problems"] == [
        "email: enter an email address like name@example.com",
        "credit_card_cvv: the CVV must be 3 or 4 digits",
    ]
    everything = "\n".join(formatter.format(r) for r in caplog.records)
    for secret in ("4432801561520455", "4432-8015-6152-0455", "12345", "jane.doe@example", EMAIL):
        assert secret not in everything
    assert all("\n" not in line for line in lines)


def _free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_serve_refuses_a_busy_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("PORT", str(port))
        monkeypatch.setenv("BIND_HOST", "127.0.0.1")
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}: port busy"):
            await frontend_server.serve()


async def test_serve_answers_http_and_stops_on_sigterm(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    monkeypatch.setenv("PORT", str(port))
    monkeypatch.setenv("BIND_HOST", "127.0.0.1")
    monkeypatch.setenv("BOUTIQUE_INSTANCE_ID", "frontend-served")
    task = asyncio.create_task(frontend_server.serve())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(100):
            try:
                health = await http.get("/_healthz")
                break
            except httpx.TransportError:
                assert not task.done(), task.exception() if task.done() else ""
                await asyncio.sleep(0.05)
        assert health.text == "ok" and health.headers["x-served-by"] == "frontend-served"
        home = await http.get("/")
        assert home.status_code == 200 and home.text.count('class="card"') == 9
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout=10)
    assert task.exception() is None
