"""The charge ledger: every charge made, by idempotency key, on disk so it outlives a restart.

A retried charge finds its first transaction here instead of charging twice; a refund marks a charge
void, or leaves a void mark under a key nothing was charged under yet, so a charge request still on
its way (its caller gave up) can never land afterwards. SQLite in WAL mode: replicas of payment on
one machine share the file, and a commit is on disk before the charge is answered.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boutique.shop.storage import open_database

_COLUMNS = "idempotency_key, fingerprint, transaction_id, state, recorded_at"
CHARGED = "charged"
VOIDED = "voided"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,   -- amount, currency, brand, last four digits: never the number
    transaction_id  TEXT NOT NULL,   -- '' for a void mark under which nothing was charged
    state           TEXT NOT NULL,   -- 'charged' or 'voided'
    recorded_at     REAL NOT NULL,   -- Unix time of the charge (or of the void mark)
    voided_at       REAL
)
"""


@dataclass(frozen=True)
class LedgerEntry:
    """One key's record: what was charged (fingerprint, no card number), its transaction, its state."""

    key: str
    fingerprint: str
    transaction_id: str
    state: str
    recorded_at: float

    @property
    def charged(self) -> bool:
        """A charge stands under this key."""
        return self.state == CHARGED


def default_path() -> Path:
    """PAYMENT_LEDGER, else payment/ledger.sqlite under BOUTIQUE_DATA_DIR (default ./.boutique)."""
    explicit = os.environ.get("PAYMENT_LEDGER", "").strip()
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BOUTIQUE_DATA_DIR", "").strip() or ".boutique") / "payment" / "ledger.sqlite"


class ChargeLedger:
    """Charges by idempotency key in a SQLite file (":memory:" for a ledger that dies with the process)."""

    def __init__(self, path: Path | str = ":memory:", clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA)
        self.recorded = 0

    def _entry(self, row: tuple[str, str, str, str, float] | None) -> LedgerEntry | None:
        return LedgerEntry(*row) if row else None

    def _row(self, key: str) -> tuple[str, str, str, str, float] | None:
        """The record under the key as a row (lock held)."""
        return self._db.execute(
            f"SELECT {_COLUMNS} FROM charges WHERE idempotency_key = ?", (key,)
        ).fetchone()  # type: ignore[no-any-return]

    def get(self, key: str) -> LedgerEntry | None:
        """The record under the key, if any."""
        with self._lock:
            row = self._row(key)
        return self._entry(row)

    def record(self, key: str, fingerprint: str, transaction_id: str) -> LedgerEntry:
        """Record a charge under its key, unless the key holds a record already: then that one is returned."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._row(key)
                if row is None:
                    row = (key, fingerprint, transaction_id, CHARGED, self.clock())
                    self._db.execute(
                        "INSERT INTO charges (idempotency_key, fingerprint, transaction_id, state, recorded_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        row,
                    )
                    self.recorded += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        entry = self._entry(row)
        assert entry is not None
        return entry

    def void(self, key: str) -> LedgerEntry | None:
        """Void the charge under the key (or mark the key void when nothing was charged); the prior record."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._row(key)
                now = self.clock()
                if row is None:
                    self._db.execute(
                        "INSERT INTO charges (idempotency_key, fingerprint, transaction_id, state, recorded_at, "
                        "voided_at) VALUES (?, '', '', ?, ?, ?)",
                        (key, VOIDED, now, now),
                    )
                elif row[3] == CHARGED:
                    self._db.execute(
                        "UPDATE charges SET state = ?, voided_at = ? WHERE idempotency_key = ?",
                        (VOIDED, now, key),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self._entry(row)

    def entries(self) -> list[LedgerEntry]:
        """Every record, oldest first (for operators and tests)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM charges ORDER BY recorded_at").fetchall()
        return [LedgerEntry(*row) for row in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
