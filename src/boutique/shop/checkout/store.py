"""The order journal: each order by its key, with how far it got, on disk so a crash loses nothing.

Checkout writes a step here before moving on (claimed → charged → shipped → placed, or failed /
voided), so a key seen again returns its order instead of placing another, and a checkout that died
mid-order is finished or undone by the next one (see `recovery.py`). An order is owned by the process
placing it for the length of its lease; updates are conditional on that ownership, so a process that
lost its lease (stopped too long) cannot overwrite the one that took over. SQLite in WAL mode: the
replicas of checkout on one machine share the file. No card data is ever written here.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boutique.shop.errors import Reason
from boutique.shop.storage import open_database


class Step(enum.Enum):
    """How far an order got."""

    CLAIMED = "claimed"  # being placed; the charge may be on its way
    CHARGED = "charged"  # paid, not shipped
    SHIPPED = "shipped"  # paid and shipped: the order will complete (cart, mail) whatever happens
    VOIDING = "voiding"  # given up: not placed; the charge (if one landed) is being voided
    PLACED = "placed"  # done
    FAILED = "failed"  # not placed, nothing charged
    VOIDED = "voided"  # not placed, the charge reversed

    @property
    def open(self) -> bool:
        """Still in progress (someone must finish or undo it)."""
        return self in (Step.CLAIMED, Step.CHARGED, Step.SHIPPED, Step.VOIDING)


OPEN_STEPS = tuple(step for step in Step if step.open)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_key      TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL,    -- this attempt's id: the charge's idempotency key
    user_id        TEXT NOT NULL,
    step           TEXT NOT NULL,
    owner          TEXT NOT NULL,    -- the instance placing (or recovering) it
    lease_until    REAL NOT NULL,    -- Unix time; after it another instance may take over
    request        BLOB NOT NULL,    -- the PlaceOrderRequest without its card
    transaction_id TEXT NOT NULL DEFAULT '',
    result         BLOB,             -- the OrderResult once shipped
    message        TEXT NOT NULL DEFAULT '',
    reason         TEXT NOT NULL DEFAULT '',  -- why it was not placed, as data (e.g. PAYMENT_DECLINED)
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_open ON orders (step, lease_until);
"""
_COLUMNS = (
    "order_key, order_id, user_id, step, owner, lease_until, request, transaction_id, result, message, reason"
)


@dataclass(frozen=True)
class OrderRecord:
    """One order's journal entry."""

    key: str
    order_id: str
    user_id: str
    step: Step
    owner: str
    lease_until: float
    request: bytes
    transaction_id: str = ""
    result: bytes | None = None
    message: str = ""
    reason: str = ""  # machine-readable cause of a failed attempt ('' when none was given)

    @classmethod
    def from_row(cls, row: tuple) -> OrderRecord:  # type: ignore[type-arg]
        key, order_id, user_id, step, owner, lease, request, transaction_id, result, message, reason = row
        return cls(
            key, order_id, user_id, Step(step), owner, lease, request, transaction_id, result, message, reason
        )


class Claim(enum.Enum):
    """What `claim` found under a key."""

    NEW = "new"  # the key is ours now, with a fresh order id
    DONE = "done"  # placed already: answer with its result
    BUSY = "busy"  # another live process is placing it
    STALE = "stale"  # left open by a process whose lease ran out: recover it first


def default_path() -> Path:
    """CHECKOUT_JOURNAL, else checkout/orders.sqlite under BOUTIQUE_DATA_DIR (default ./.boutique)."""
    explicit = os.environ.get("CHECKOUT_JOURNAL", "").strip()
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BOUTIQUE_DATA_DIR", "").strip() or ".boutique") / "checkout" / "orders.sqlite"


def _add_reason_column(db: sqlite3.Connection) -> None:
    """Bring a journal written before the `reason` column up to date (once; replicas may race to it).

    Declined orders of those journals are recognised by the one message they were given then, so their
    status page keeps telling the shopper why; every later record stores its reason as data.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(orders)")}
        if "reason" not in columns:
            db.execute("ALTER TABLE orders ADD COLUMN reason TEXT NOT NULL DEFAULT ''")
            db.execute(
                "UPDATE orders SET reason = ? WHERE step = ? AND message LIKE 'payment declined:%'",
                (Reason.PAYMENT_DECLINED.value, Step.FAILED.value),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class OrderJournal:
    """Orders by key in a SQLite file (":memory:" for one that dies with the process)."""

    def __init__(
        self, path: Path | str = ":memory:", owner: str = "checkout", clock: Callable[[], float] = time.time
    ) -> None:
        self.path = str(path)
        self.owner = owner
        self.clock = clock
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA)
        _add_reason_column(self._db)

    def _select(self, key: str) -> OrderRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM orders WHERE order_key = ?", (key,)).fetchone()
        return OrderRecord.from_row(row) if row else None

    def get(self, key: str) -> OrderRecord | None:
        """The order under the key, if any."""
        with self._lock:
            return self._select(key)

    def claim(
        self, key: str, order_id: str, user_id: str, request: bytes, lease: float
    ) -> tuple[Claim, OrderRecord]:
        """Take the key for a new attempt with `order_id`, unless it is placed, busy or needs recovery.

        A key whose last attempt failed or was voided starts over (the shopper fixed the card and sent
        the same form again): a new order id, so a new charge key.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._select(key)
                now = self.clock()
                if found is not None and found.step is Step.PLACED:
                    outcome = Claim.DONE
                elif found is not None and found.step.open:
                    outcome = Claim.BUSY if found.lease_until > now else Claim.STALE
                else:
                    outcome = Claim.NEW
                    self._db.execute(
                        "INSERT OR REPLACE INTO orders (order_key, order_id, user_id, step, owner, lease_until, "
                        "request, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            key,
                            order_id,
                            user_id,
                            Step.CLAIMED.value,
                            self.owner,
                            now + lease,
                            request,
                            now,
                            now,
                        ),
                    )
                    found = self._select(key)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        assert found is not None
        return outcome, found

    def advance(
        self,
        record: OrderRecord,
        step: Step,
        *,
        transaction_id: str | None = None,
        result: bytes | None = None,
        message: str | None = None,
        reason: str | None = None,
        lease: float | None = None,
    ) -> bool:
        """Record the next step of an attempt this process owns; False when it no longer owns it."""
        sets = ["step = ?", "updated_at = ?"]
        values: list[object] = [step.value, self.clock()]
        for column, value in (
            ("transaction_id", transaction_id),
            ("result", result),
            ("message", message),
            ("reason", reason),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                values.append(value)
        if lease is not None:
            sets.append("lease_until = ?")
            values.append(self.clock() + lease)
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE orders SET {', '.join(sets)} WHERE order_key = ? AND order_id = ? AND owner = ?",
                (*values, record.key, record.order_id, self.owner),
            )
        return cursor.rowcount == 1

    def stale(self, limit: int = 50) -> list[OrderRecord]:
        """Open orders whose lease ran out, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM orders WHERE step IN (?, ?, ?, ?) AND lease_until <= ? "
                "ORDER BY updated_at LIMIT ?",
                (*(step.value for step in OPEN_STEPS), self.clock(), limit),
            ).fetchall()
        return [OrderRecord.from_row(row) for row in rows]

    def take_over(self, record: OrderRecord, lease: float) -> OrderRecord | None:
        """Own a stale open order for `lease` seconds to finish or undo it; None if someone else did first."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE orders SET owner = ?, lease_until = ?, updated_at = ? "
                "WHERE order_key = ? AND order_id = ? AND step = ? AND lease_until <= ?",
                (
                    self.owner,
                    self.clock() + lease,
                    self.clock(),
                    record.key,
                    record.order_id,
                    record.step.value,
                    self.clock(),
                ),
            )
            return self._select(record.key) if cursor.rowcount == 1 else None

    def release(self, record: OrderRecord, after: float) -> None:
        """Give up ownership of an open order for now: another try may take it over in `after` seconds."""
        with self._lock:
            self._db.execute(
                "UPDATE orders SET lease_until = ? WHERE order_key = ? AND order_id = ? AND owner = ?",
                (self.clock() + after, record.key, record.order_id, self.owner),
            )

    def records(self) -> list[OrderRecord]:
        """Every order, oldest first (for operators and tests)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM orders ORDER BY created_at").fetchall()
        return [OrderRecord.from_row(row) for row in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
