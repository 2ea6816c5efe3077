"""The charge ledger: which idempotency key produced which transaction, so a retried charge is not a second one."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_CAPACITY = 100_000
DEFAULT_TTL = 24 * 3600.0


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded charge: what was charged (fingerprint, no card number) and its transaction id."""

    fingerprint: str
    transaction_id: str
    recorded_at: float


class ChargeLedger:
    """Recent charges by idempotency key, bounded in size and age (oldest forgotten first)."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, LedgerEntry] = OrderedDict()
        self.recorded = 0

    def get(self, key: str) -> LedgerEntry | None:
        """The charge recorded under the key, unless it has aged out."""
        entry = self._entries.get(key)
        if entry is not None and self.clock() - entry.recorded_at > self.ttl:
            del self._entries[key]
            return None
        return entry

    def record(self, key: str, fingerprint: str, transaction_id: str) -> LedgerEntry:
        """Remember a charge under its key."""
        entry = LedgerEntry(fingerprint, transaction_id, self.clock())
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        self.recorded += 1
        return entry
