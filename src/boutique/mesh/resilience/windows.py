"""The sliding windows of recent call outcomes a closed circuit breaker judges its failure rates on."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol


class OutcomeWindow(Protocol):
    """The sliding window of recent outcomes the closed breaker judges failure and slow-call rates on."""

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one finished call."""
        ...

    def totals(self, now: float) -> tuple[int, int, int]:
        """Calls, failures and slow calls currently in the window."""
        ...

    def clear(self) -> None:
        """Forget everything."""
        ...


class CountWindow:
    """The outcomes of the last `size` calls; `failures` and `slow` are kept as running counts."""

    def __init__(self, size: int) -> None:
        """Create an empty window of `size` calls."""
        self._size = size
        self._outcomes: deque[tuple[bool, bool]] = deque()
        self.failures = 0  # failures among them
        self.slow = 0  # slow calls among them

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one call, pushing the oldest out once the window is full."""
        if len(self._outcomes) == self._size:
            old_failed, old_slow = self._outcomes.popleft()
            self.failures -= old_failed
            self.slow -= old_slow
        self._outcomes.append((failed, slow))
        self.failures += failed
        self.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """Calls, failures and slow calls among the last `size`."""
        return len(self._outcomes), self.failures, self.slow

    def clear(self) -> None:
        """Forget everything."""
        self._outcomes.clear()
        self.failures = self.slow = 0


@dataclass
class _OutcomeBucket:
    """Outcomes of the calls that finished during one second."""

    second: int = -1
    calls: int = 0
    failures: int = 0
    slow: int = 0


class TimeWindow:
    """The outcomes of the calls that finished in the last `seconds`, kept in one-second buckets."""

    def __init__(self, seconds: float) -> None:
        """Create an empty window spanning `seconds` (rounded up to whole seconds)."""
        self._span = max(1, math.ceil(seconds))
        self._buckets = [_OutcomeBucket() for _ in range(self._span)]

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one call to the bucket of the current second."""
        second = math.floor(now)
        bucket = self._buckets[second % self._span]
        if bucket.second != second:
            bucket.second, bucket.calls, bucket.failures, bucket.slow = second, 0, 0, 0
        bucket.calls += 1
        bucket.failures += failed
        bucket.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """Calls, failures and slow calls over the buckets still inside the window."""
        oldest = math.floor(now) - self._span
        live = [b for b in self._buckets if b.second > oldest]
        return sum(b.calls for b in live), sum(b.failures for b in live), sum(b.slow for b in live)

    def clear(self) -> None:
        """Forget everything."""
        for bucket in self._buckets:
            bucket.second = -1
