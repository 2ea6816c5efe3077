"""Bulkhead: a cap on calls in flight to one dependency, so a slow dependency cannot absorb every worker."""

from __future__ import annotations

import threading
from types import TracebackType


class BulkheadFullError(Exception):
    """Raised at once (never waits) when the bulkhead already holds its maximum of calls."""

    def __init__(self, name: str, max_concurrent: int) -> None:
        super().__init__(f"bulkhead {name!r} is full ({max_concurrent} calls in flight)")
        self.name = name
        self.max_concurrent = max_concurrent


class BulkheadSlot:
    """One admitted call; release it exactly when the call ends (a second release is a no-op)."""

    __slots__ = ("_bulkhead", "_released")

    def __init__(self, bulkhead: Bulkhead) -> None:
        self._bulkhead = bulkhead
        self._released = False

    def release(self) -> None:
        """Give the slot back; safe to call more than once."""
        with self._bulkhead._lock:
            if self._released:
                return
            self._released = True
            self._bulkhead._in_flight -= 1

    @property
    def released(self) -> bool:
        """Whether the slot was given back."""
        return self._released

    def __enter__(self) -> BulkheadSlot:
        """Use the already-admitted slot as a context manager."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the slot however the block ended."""
        self.release()


class Bulkhead:
    """Admits at most `max_concurrent` calls at a time; thread-safe and asyncio-safe, never blocks."""

    def __init__(self, max_concurrent: int, name: str = "bulkhead") -> None:
        """Create a bulkhead with room for `max_concurrent` calls."""
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.name = name
        self.max_concurrent = max_concurrent
        self._lock = threading.Lock()
        self._in_flight = 0
        self._rejected = 0

    def acquire(self) -> BulkheadSlot:
        """Take a slot or raise `BulkheadFullError` when every slot is taken."""
        self.enter()
        return BulkheadSlot(self)

    def enter(self) -> None:
        """Take a slot without a slot object (raises `BulkheadFullError` when full); pair with `leave()`."""
        with self._lock:
            if self._in_flight >= self.max_concurrent:
                self._rejected += 1
                raise BulkheadFullError(self.name, self.max_concurrent)
            self._in_flight += 1

    def leave(self) -> None:
        """Give back a slot taken with `enter()`; call it exactly once per successful `enter()`."""
        with self._lock:
            self._in_flight -= 1

    def slot(self) -> BulkheadSlot:
        """Take a slot for a `with bulkhead.slot():` block (raises `BulkheadFullError` when full)."""
        return self.acquire()

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        return self._in_flight

    @property
    def rejected_count(self) -> int:
        """Calls refused because the bulkhead was full."""
        return self._rejected
