"""The order journal keeps why an order was not placed as data, and brings older journals up to date."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from boutique.mesh import StaticEndpoints
from boutique.shop.cart.client import CartClient
from boutique.shop.checkout.server import CheckoutClients
from boutique.shop.checkout.service import CheckoutService
from boutique.shop.checkout.store import OrderJournal, Step
from boutique.shop.currency.client import CurrencyClient
from boutique.shop.email.client import EmailClient
from boutique.shop.errors import Reason
from boutique.shop.payment.client import PaymentClient
from boutique.shop.productcatalog.client import CatalogClient
from boutique.shop.shipping.client import ShippingClient

USER = "shopper-1"

# The journal as it was written before reasons were kept.
OLD_SCHEMA = """
CREATE TABLE orders (
    order_key TEXT PRIMARY KEY, order_id TEXT NOT NULL, user_id TEXT NOT NULL, step TEXT NOT NULL,
    owner TEXT NOT NULL, lease_until REAL NOT NULL, request BLOB NOT NULL,
    transaction_id TEXT NOT NULL DEFAULT '', result BLOB, message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX orders_open ON orders (step, lease_until);
"""
OLD_ROWS = [
    ("declined", Step.FAILED, "payment declined: card expired 01/2025"),
    ("empty", Step.FAILED, "not placed: cart is empty"),
    ("voided", Step.VOIDED, "not placed, the charge was voided: shipping failed"),
]


def write_old_journal(path: Path) -> None:
    """A journal file in the old layout, holding OLD_ROWS."""
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for key, step, message in OLD_ROWS:
        db.execute(
            "INSERT INTO orders (order_key, order_id, user_id, step, owner, lease_until, request, message, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, 'checkout-0', 0, x'', ?, 1, 1)",
            (key, f"order-{key}", USER, step.value, message),
        )
    db.commit()
    db.close()


@pytest.fixture
async def clients() -> AsyncIterator[CheckoutClients]:
    """Clients of an address nothing listens on: reading an order's status calls none of them."""
    nowhere = StaticEndpoints(("127.0.0.1:9",))
    built = CheckoutClients(
        CatalogClient(nowhere),
        CartClient(nowhere),
        CurrencyClient(nowhere),
        ShippingClient(nowhere),
        PaymentClient(nowhere),
        EmailClient(nowhere),
    )
    yield built
    await built.close()


async def test_an_old_journal_gets_the_reason_column_and_keeps_telling_why(
    tmp_path: Path, clients: CheckoutClients
) -> None:
    path = tmp_path / "orders.sqlite"
    write_old_journal(path)
    OrderJournal(path).close()
    journal = OrderJournal(path)  # a second open finds the column in place
    reasons = {record.key: record.reason for record in journal.records()}
    assert reasons == {"declined": Reason.PAYMENT_DECLINED, "empty": "", "voided": ""}
    service: CheckoutService = clients.service(journal)
    declined = await service.order_status("declined", USER)
    assert declined.message == "The payment declined: card expired 01/2025. Nothing was charged."
    empty = await service.order_status("empty", USER)
    assert empty.message == "The order could not be completed. Nothing was charged."
    voided = await service.order_status("voided", USER)
    assert "voided" in voided.message
    journal.close()


async def test_the_reason_is_what_is_read_not_the_message(tmp_path: Path, clients: CheckoutClients) -> None:
    journal = OrderJournal(tmp_path / "orders.sqlite")
    _, record = journal.claim("k-1", "order-1", USER, b"", 30.0)
    journal.advance(record, Step.FAILED, message="payment declined: made up", reason="")
    _, other = journal.claim("k-2", "order-2", USER, b"", 30.0)
    journal.advance(
        other, Step.FAILED, message="card refused: CVV must be 0 to 9999", reason=Reason.PAYMENT_DECLINED
    )
    service = clients.service(journal)
    assert (await service.order_status("k-1", USER)).message.startswith("The order could not be completed")
    assert (await service.order_status("k-2", USER)).message == (
        "The card refused: CVV must be 0 to 9999. Nothing was charged."
    )
    journal.close()
