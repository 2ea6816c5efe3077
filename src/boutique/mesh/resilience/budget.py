"""Retry budget: retries may be at most a share of recent requests plus a small reserve, so they never
multiply an outage (the token-bucket idea of Finagle and Linkerd, over a sliding window)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_EPSILON = 1e-9


@dataclass
class _Bucket:
    """Requests and retries seen during one slice of the window."""

    index: int = -1
    requests: int = 0
    retries: int = 0


class RetryBudget:
    """Allows a retry only while retries in the window stay within `ratio` * requests + a per-second reserve.

    Call `record_request()` once per logical request (its first attempt, not its retries) and
    `try_withdraw()` before each retry. Over any window of `window_seconds`, at a steady request rate,
    retries <= ratio * requests + min_per_second * window_seconds — by default 20 % of requests plus
    10 per second. Both sides expire together as the window slides, so the budget refills.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a budget; the window is kept in slices of about one second each."""
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must be >= 0")
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window_seconds = window_seconds
        self._clock = clock
        self._slices = max(1, math.ceil(window_seconds))
        self._width = window_seconds / self._slices
        self._reserve = min_per_second * window_seconds
        self._buckets = [_Bucket() for _ in range(self._slices)]
        self._lock = threading.Lock()
        self._exhausted = 0

    def record_request(self) -> None:
        """Deposit: one more request in the current slice."""
        index = math.floor(self._clock() / self._width)
        with self._lock:
            bucket = self._buckets[index % self._slices]
            if bucket.index != index:
                bucket.index, bucket.requests, bucket.retries = index, 0, 0
            bucket.requests += 1

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget allows it; False (and counted as exhausted) otherwise."""
        with self._lock:
            requests, retries = self._totals()
            if retries + 1 <= self.ratio * requests + self._reserve + _EPSILON:
                self._current().retries += 1
                return True
            self._exhausted += 1
            return False

    @property
    def balance(self) -> float:
        """Retries still allowed in the current window (may be fractional)."""
        with self._lock:
            requests, retries = self._totals()
            return max(0.0, self.ratio * requests + self._reserve - retries)

    @property
    def exhausted_count(self) -> int:
        """How many retries were refused because the budget was spent."""
        return self._exhausted

    def _index(self) -> int:
        """The number of the window slice the clock is in now."""
        return math.floor(self._clock() / self._width)

    def _current(self) -> _Bucket:
        """The bucket of the current slice, emptied first if it still holds an expired slice."""
        index = self._index()
        bucket = self._buckets[index % self._slices]
        if bucket.index != index:
            bucket.index, bucket.requests, bucket.retries = index, 0, 0
        return bucket

    def _totals(self) -> tuple[int, int]:
        """Requests and retries over the slices still inside the window."""
        oldest = self._index() - self._slices
        live = [b for b in self._buckets if b.index > oldest]
        return sum(b.requests for b in live), sum(b.retries for b in live)
