"""Reading and validating what browsers send: form bodies, add-to-cart, currency, checkout, Referer."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import date
from urllib.parse import unquote_plus, urlsplit

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from boutique.shop.frontend.failures import PageError, Problem
from boutique.shop.frontend.session import CURRENCIES
from boutique.shop.proto import demo_pb2 as pb

MAX_FIELDS = 50
ORDER_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_TEXT = 256
MAX_EMAIL = 254
MAX_QUANTITY = 10
MAX_ZIP = 99_999_999

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_YEAR = re.compile(r"^[0-9]{4}$")
_CARD_SEPARATORS = re.compile(r"[ -]")


def malformed(message: str) -> PageError:
    """A 400 page for a body the shop cannot read as a form."""
    hint = "The form could not be read. Reload the page and submit it again."
    return PageError(400, "Malformed form", hint, [Problem("form", message)])


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """The submitted form as a dict; 413 past `limit` bytes, 400 when it is not a well-formed form."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        return parse_urlencoded(bytes(body))
    if content_type == "multipart/form-data":
        return await _parse_multipart(request.headers, bytes(body), limit)
    raise malformed("send the form as application/x-www-form-urlencoded")


def _too_large(limit: int) -> PageError:
    """The 413 page for an oversized body."""
    problem = Problem("body", f"send at most {limit // 1024} KiB")
    return PageError(413, "Request too large", "The form sent was larger than the shop accepts.", [problem])


def parse_urlencoded(body: bytes) -> dict[str, str]:
    """Strictly decode application/x-www-form-urlencoded: ASCII, valid %-escapes, UTF-8, no repeats."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise malformed("the form body is not URL-encoded (raw non-ASCII bytes)") from None
    if _BAD_ESCAPE.search(text):
        raise malformed("the form body has a broken %-escape")
    fields: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise malformed("every form field needs a name=value pair")
        try:
            key, decoded = unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            raise malformed("the form is not UTF-8 text") from None
        _store(fields, key, decoded)
    return fields


async def _parse_multipart(headers: Headers, body: bytes, limit: int) -> dict[str, str]:
    """Decode multipart/form-data with text fields only (file uploads are refused)."""

    async def chunks() -> AsyncGenerator[bytes, None]:
        """The already-read body as the parser's stream."""
        yield body

    parser = MultiPartParser(headers, chunks(), max_files=0, max_fields=MAX_FIELDS, max_part_size=limit)
    try:
        data = await parser.parse()
    except MultiPartException as exc:
        raise malformed(f"multipart form: {exc.message}") from None
    except ValueError:
        raise malformed("multipart form could not be decoded") from None
    fields: dict[str, str] = {}
    for key, value in data.multi_items():
        if not isinstance(value, str):
            raise malformed("file uploads are not accepted")
        _store(fields, key, value)
    return fields


def _store(fields: dict[str, str], key: str, value: str) -> None:
    """Add one field, refusing repeats and runaway field counts."""
    if key in fields:
        raise malformed(f"field {key!r} is given more than once")
    if len(fields) >= MAX_FIELDS:
        raise malformed(f"more than {MAX_FIELDS} fields")
    fields[key] = value


@dataclass(frozen=True)
class AddToCart:
    """A validated add-to-cart form."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class CheckoutForm:
    """A validated checkout form; `card_number` is digits only."""

    email: str
    street_address: str
    zip_code: int
    city: str
    state: str
    country: str
    card_number: str
    expiration_month: int
    expiration_year: int
    cvv: int
    order_key: str = ""  # the cart page's reference for this order: placing it twice places it once

    def address(self) -> pb.Address:
        """The shipping address message."""
        return pb.Address(
            street_address=self.street_address,
            city=self.city,
            state=self.state,
            country=self.country,
            zip_code=self.zip_code,
        )

    def card(self) -> pb.CreditCardInfo:
        """The card message."""
        return pb.CreditCardInfo(
            credit_card_number=self.card_number,
            credit_card_cvv=self.cvv,
            credit_card_expiration_year=self.expiration_year,
            credit_card_expiration_month=self.expiration_month,
        )


@dataclass(frozen=True)
class SampleCheckout:
    """The values the cart page's checkout form is prefilled with (a valid test Visa)."""

    email: str = "someone@example.com"
    street_address: str = "1600 Amphitheatre Parkway"
    zip_code: str = "94043"
    city: str = "Mountain View"
    state: str = "CA"
    country: str = "United States"
    credit_card_number: str = "4432-8015-6152-0454"
    credit_card_expiration_month: int = 1
    credit_card_expiration_year: int = 0
    credit_card_cvv: str = "672"

    @classmethod
    def for_today(cls, today: date) -> SampleCheckout:
        """The sample with a card that expires in January of next year."""
        return cls(credit_card_expiration_year=today.year + 1)

    def address(self) -> pb.Address:
        """The sample address, used for the cart page's shipping quote."""
        return pb.Address(
            street_address=self.street_address,
            city=self.city,
            state=self.state,
            country=self.country,
            zip_code=int(self.zip_code),
        )


class _Checker:
    """Collects every problem with a form so the page can list them all at once."""

    def __init__(self, form: Mapping[str, str]) -> None:
        self.form = form
        self.problems: list[Problem] = []

    def fail(self, name: str, message: str) -> None:
        """Record a problem with one field."""
        self.problems.append(Problem(name, message))

    def text(self, name: str, label: str, max_length: int = MAX_TEXT) -> str:
        """A required single-line text field of at most `max_length` characters."""
        value = self.form.get(name, "").strip()
        if not value:
            self.fail(name, f"enter the {label}")
        elif len(value) > max_length:
            self.fail(name, f"the {label} must be at most {max_length} characters")
        elif _CONTROL.search(value):
            self.fail(name, f"the {label} must not contain control characters")
        return value

    def integer(self, name: str, low: int, high: int, message: str) -> int:
        """A whole number in low..high; `message` says what is expected when it is not."""
        value = self.form.get(name, "").strip()
        if not _DIGITS.match(value) or not low <= int(value) <= high:
            self.fail(name, message)
            return low
        return int(value)

    def expiry_year(self, name: str, today: date) -> int:
        """A four-digit card expiry year not before this year; no upper bound, as Online Boutique."""
        value = self.form.get(name, "").strip()
        if not _YEAR.match(value):
            self.fail(name, f"the expiry year must have four digits, like {today.year + 1}")
            return today.year
        if int(value) < today.year:
            self.fail(name, f"the card has expired: the expiry year must be {today.year} or later")
        return int(value)


def parse_add_to_cart(form: Mapping[str, str]) -> AddToCart:
    """Validate product_id (present) and quantity (1..10); 422 naming each bad field."""
    check = _Checker(form)
    product_id = check.text("product_id", "product id", max_length=64)
    quantity = check.integer(
        "quantity", 1, MAX_QUANTITY, f"the quantity must be a whole number from 1 to {MAX_QUANTITY}"
    )
    if check.problems:
        raise PageError(422, "Cannot add to cart", "Fix the following and try again.", check.problems)
    return AddToCart(product_id, quantity)


def parse_currency(form: Mapping[str, str], supported: set[str]) -> str:
    """The chosen currency code: one of the picker codes that the currency service supports."""
    code = form.get("currency_code", "").strip()
    if code not in CURRENCIES or code not in supported:
        choices = ", ".join(c for c in CURRENCIES if c in supported)
        problem = Problem("currency_code", f"choose one of {choices}")
        raise PageError(422, "Unknown currency", "Pick a currency from the list.", [problem])
    return code


def parse_checkout(form: Mapping[str, str], today: date) -> CheckoutForm:
    """Validate every checkout field; 422 naming each problem (never echoing card data)."""
    check = _Checker(form)
    email = form.get("email", "").strip()
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        check.fail("email", "enter an email address like name@example.com")
    street = check.text("street_address", "street address")
    zip_code = check.integer(
        "zip_code", 0, MAX_ZIP, f"the zip code must be a whole number from 0 to {MAX_ZIP}"
    )
    city = check.text("city", "city")
    state = check.text("state", "state")
    country = check.text("country", "country")
    card_number = _CARD_SEPARATORS.sub("", form.get("credit_card_number", "").strip())
    if not re.fullmatch(r"[0-9]{12,19}", card_number):
        check.fail(
            "credit_card_number", "the card number must have 12 to 19 digits (spaces and dashes allowed)"
        )
    month = check.integer("credit_card_expiration_month", 1, 12, "the expiry month must be from 1 to 12")
    year = check.expiry_year("credit_card_expiration_year", today)
    cvv_text = form.get("credit_card_cvv", "").strip()
    if not re.fullmatch(r"[0-9]{3,4}", cvv_text):
        check.fail("credit_card_cvv", "the CVV must be 3 or 4 digits")
    order_key = form.get("order_key", "").strip() or new_order_key()  # clients without one: a new order
    if not ORDER_KEY.fullmatch(order_key):
        check.fail("order_key", "the order reference is not one this shop made: reload the cart page")
    if check.problems:
        raise PageError(
            422, "Please check your order", "Fix the following and place the order again.", check.problems
        )
    return CheckoutForm(
        email, street, zip_code, city, state, country, card_number, month, year, int(cvv_text), order_key
    )


def new_order_key() -> str:
    """A fresh order reference for the cart page's form (unguessable: it also opens the order's status)."""
    return secrets.token_hex(16)


def safe_return_path(referer: str | None, host: str | None) -> str:
    """Where to send the shopper back to: the Referer's path when it is this site's, else '/'."""
    if not referer or _CONTROL.search(referer) or "\\" in referer:
        return "/"
    parts = urlsplit(referer)
    same_site = (
        parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == (host or "").lower()
    )
    if (parts.scheme or parts.netloc) and not same_site:
        return "/"
    path = parts.path
    if not path.startswith("/") or path.startswith("//"):
        return "/"
    if path.startswith("/cart/"):  # POST-only pages: land on the cart instead
        return "/cart"
    return path + (f"?{parts.query}" if parts.query else "")
