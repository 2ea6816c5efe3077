"""Shoppers who check out, and the money invariants every checkout fault must keep.

Each shopper adds to the cart, opens the cart page (whose form carries an order key) and places the
order; now and then it sends the same form twice, as a double click or a browser retry does. What the
shop answered is recorded: the order page (placed), a failure page, or the page saying the outcome is
unknown. Afterwards the payment ledger, the order journal and the outbox are read from the data
directory and checked against each other and against what every shopper was shown.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.faults.traffic import PRODUCTS

ORDER_ID = re.compile(r'<code class="order-id">([^<]+)</code>')
ORDER_KEY = re.compile(r'name="order_key" value="([^"]+)"')
SESSION_COOKIE = "shop_session-id"
# Every service one placed order passes through (its trace holds each of them).
CHECKOUT_SERVICES = {
    "frontend",
    "checkout",
    "cart",
    "productcatalog",
    "currency",
    "shipping",
    "payment",
    "email",
}


@dataclass(frozen=True)
class Attempt:
    """One submission of a checkout form and what the shopper was shown."""

    key: str
    at: float
    status: int  # 0: no answer at all (the shopper's own timeout)
    shown: str  # "placed", "failed" or "unknown"
    order_id: str = ""
    session: str = ""  # the shopper's session cookie: only that shopper may see the order's status
    page: str = ""  # the page's heading and hint, for the test's report
    done: float = 0.0  # time.time() when the answer came


def _heading(response: httpx.Response | None) -> str:
    if response is None:
        return "no answer"
    found = re.findall(r"<h1>(.*?)</h1>\s*(?:<p>(.*?)</p>)?", response.text, re.S)
    return " / ".join(" ".join(part.split()) for part in found[0] if part) if found else ""


def _outcome(response: httpx.Response | None) -> tuple[int, str, str]:
    if response is None:
        return 0, "unknown", ""
    if response.status_code == 200 and (found := ORDER_ID.search(response.text)):
        return 200, "placed", found.group(1)
    # "unreachable": checkout was never called, but an earlier send of the same form may have placed it.
    if re.search(r'data-outcome="(unknown|unreachable)"', response.text) or response.status_code == 504:
        return response.status_code, "unknown", ""
    return response.status_code, "failed", ""


def checkout_form(page: str) -> dict[str, str]:
    """The cart page's checkout form, as a browser would send it (the prefilled sample values)."""
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    for name in ("credit_card_expiration_month", "credit_card_expiration_year"):
        chosen = re.search(rf'<select[^>]*name="{name}".*?<option value="([^"]+)"[^>]*selected', page, re.S)
        if chosen:
            fields[name] = chosen.group(1)
    return fields


@dataclass
class Checkouts:
    """Shopper threads placing orders until stopped; every attempt recorded."""

    base_url: str
    count: int = 4
    pause: float = 0.3
    timeout: float = 30.0  # longer than the frontend's own checkout deadline
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _submit(self, client: httpx.Client, key: str, form: dict[str, str]) -> Attempt:
        at = time.time()
        try:
            response: httpx.Response | None = client.post("/cart/checkout", data=form)
        except httpx.HTTPError:
            response = None
        status, shown, order_id = _outcome(response)
        session = client.cookies.get(SESSION_COOKIE) or ""
        page = "" if shown == "placed" else _heading(response)
        return Attempt(key, at, status, shown, order_id, session, page, time.time())

    def _shopper(self, number: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
            round_ = 0
            while not self._stop.is_set():
                try:
                    product = PRODUCTS[(number + round_) % len(PRODUCTS)]
                    client.post("/cart", data={"product_id": product, "quantity": "1"})
                    page = client.get("/cart").text
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"browsing: {type(exc).__name__}")
                    self._stop.wait(self.pause)
                    continue
                found = ORDER_KEY.search(page)
                if found is None:  # the cart page failed (a dependency down): try again later
                    self._stop.wait(self.pause)
                    continue
                form = checkout_form(page)
                made = [self._submit(client, found.group(1), form)]
                if round_ % 4 == 1:  # the same form again: a double click or a browser retry
                    made.append(self._submit(client, found.group(1), form))
                with self._lock:
                    self.attempts.extend(made)
                round_ += 1
                self._stop.wait(self.pause)

    def start(self) -> Checkouts:
        for number in range(self.count):
            thread = threading.Thread(target=self._shopper, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Attempt]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 10)
        with self._lock:
            return list(self.attempts)


def _rows(path: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql).fetchall()


@dataclass
class Books:
    """What the shop's own records say: charges, orders, mails."""

    charges: dict[str, str]  # charge idempotency key (the order id) -> state
    orders: dict[str, tuple[str, str]]  # order key -> (order id, step)
    mailed: set[str]  # order ids with a confirmation in the outbox

    @classmethod
    def read(cls, data_dir: Path) -> Books:
        charges = dict(
            _rows(data_dir / "payment" / "ledger.sqlite", "SELECT idempotency_key, state FROM charges")
        )
        orders = {
            key: (order_id, step)
            for key, order_id, step in _rows(
                data_dir / "checkout" / "orders.sqlite", "SELECT order_key, order_id, step FROM orders"
            )
        }
        mailed = {p.stem for p in (data_dir / "outbox").glob("*.html")}
        return cls(charges, orders, mailed)

    @property
    def open_orders(self) -> list[str]:
        return [
            key
            for key, (_, step) in self.orders.items()
            if step in ("claimed", "charged", "shipped", "voiding")
        ]


def settle(data_dir: Path, timeout: float = 90.0) -> Books:
    """Wait until no order is left open (recovery finished or undid them all), then read the books."""
    deadline = time.monotonic() + timeout
    while True:
        books = Books.read(data_dir)
        if not books.open_orders or time.monotonic() > deadline:
            return books
        time.sleep(0.5)


def check_invariants(books: Books, attempts: list[Attempt], statuses: dict[str, str]) -> dict[str, int]:
    """Every charge belongs to exactly one placed order, every placed order was charged and mailed once,
    and no shopper shown a failure was charged. `statuses`: order key -> what its status page says now.
    Returns the figures for the test to print."""
    assert not books.open_orders, f"orders still open: {books.open_orders}"
    placed = {order_id: key for key, (order_id, step) in books.orders.items() if step == "placed"}
    standing = {order_id for order_id, state in books.charges.items() if state == "charged"}
    assert standing == set(placed), (
        f"charges without a placed order: {sorted(standing - set(placed))}; "
        f"placed orders without a charge: {sorted(set(placed) - standing)}"
    )
    assert set(placed) <= books.mailed, f"placed orders never mailed: {sorted(set(placed) - books.mailed)}"
    assert books.mailed <= set(placed), f"mails for orders not placed: {sorted(books.mailed - set(placed))}"
    shown: dict[str, set[str]] = {}
    for attempt in attempts:
        shown.setdefault(attempt.key, set()).add(attempt.shown)
        if attempt.shown == "placed":
            assert books.orders[attempt.key] == (attempt.order_id, "placed"), attempt
    for key, outcomes in shown.items():
        step = books.orders.get(key, ("", "none"))[1]
        if "failed" in outcomes and "placed" not in outcomes:
            assert step != "placed", (
                f"shopper {key} was shown a failure, yet the order was placed and charged: "
                f"{[a for a in attempts if a.key == key]}"
            )
        if outcomes == {"unknown"}:
            assert statuses.get(key) in ("placed", "not_placed"), (
                f"order {key} never resolved: {statuses.get(key)}"
            )
            assert (statuses[key] == "placed") == (step == "placed"), (
                f"status page and books disagree for {key}"
            )
    double = sum(1 for a in attempts if sum(b.key == a.key for b in attempts) > 1) // 2
    pages: dict[str, int] = {}
    for attempt in attempts:
        if attempt.shown != "placed":
            pages[f"{attempt.status} {attempt.page[:150]}"] = (
                pages.get(f"{attempt.status} {attempt.page[:150]}", 0) + 1
            )
    for page, count in sorted(pages.items(), key=lambda item: -item[1]):
        print(f"  {count:4d} x {page}")
    return {
        "attempts": len(attempts),
        "double_submits": double,
        "shown_placed": sum(a.shown == "placed" for a in attempts),
        "shown_failed": sum(a.shown == "failed" for a in attempts),
        "shown_unknown": sum(a.shown == "unknown" for a in attempts),
        "orders_placed": len(placed),
        "charges_voided": sum(state == "voided" for state in books.charges.values()),
    }


def status_pages(base_url: str, attempts: list[Attempt]) -> dict[str, str]:
    """What the order status page says now for every key whose outcome its shopper was not told."""
    found = {}
    for attempt in {a.key: a for a in attempts if a.shown == "unknown"}.values():
        cookies = {SESSION_COOKIE: attempt.session}
        with httpx.Client(base_url=base_url, timeout=10, cookies=cookies) as client:
            page = client.get(f"/order/{attempt.key}").text
        outcome = re.search(r'data-outcome="([a-z_]+)"', page)
        found[attempt.key] = (
            "placed" if ORDER_ID.search(page) else (outcome.group(1) if outcome else "missing")
        )
    return found
