"""A breaker's rolling statistics for the Hystrix-style status stream: ten one-second buckets of counts
and latency samples, summed into the `rollingCount*`, `errorPercentage` and `latencyTotal` fields.

These numbers only report; the breaker's decisions are made on its outcome window (windows.py).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

STATS_WINDOW_SECONDS = 10
PERCENTILES = ("0", "25", "50", "75", "90", "95", "99", "99.5", "100")
SAMPLES_PER_SECOND = 1024  # latency samples kept per one-second bucket (a uniform reservoir beyond that)


@dataclass
class _StatsBucket:
    """What happened during one second."""

    second: int = -1
    success: int = 0
    failure: int = 0
    timeout: int = 0
    short_circuited: int = 0
    fallback_success: int = 0
    fallback_failure: int = 0
    slow: int = 0
    latency_count: int = 0
    latency_sum_ms: float = 0.0
    samples_ms: list[float] = field(default_factory=list)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 gives the minimum, 100 the maximum, empty gives 0)."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(p * len(sorted_values) / 100)
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


class RollingStats:
    """Counts and latencies of the last ten seconds; not thread-safe (the breaker calls it under its lock)."""

    def __init__(self) -> None:
        """Create empty buckets."""
        self._buckets = [_StatsBucket() for _ in range(STATS_WINDOW_SECONDS)]
        self._random = random.Random()

    def _bucket(self, now: float) -> _StatsBucket:
        """The bucket of the current second, emptied first if it still holds an expired second."""
        second = math.floor(now)
        index = second % STATS_WINDOW_SECONDS
        bucket = self._buckets[index]
        if bucket.second != second:
            bucket = self._buckets[index] = _StatsBucket(second=second)
        return bucket

    def record(self, now: float, failed: bool, timeout: bool, slow: bool, seconds: float) -> None:
        """Count one finished call (a timeout is also a failure) and sample its latency.

        Runs on every call, so it finds the bucket inline rather than through `_bucket`.
        """
        second = math.floor(now)
        bucket = self._buckets[second % STATS_WINDOW_SECONDS]
        if bucket.second != second:
            bucket = self._buckets[second % STATS_WINDOW_SECONDS] = _StatsBucket(second=second)
        if failed:
            bucket.failure += 1
            bucket.timeout += timeout
        else:
            bucket.success += 1
        bucket.slow += slow
        value = seconds * 1000.0
        bucket.latency_count += 1
        bucket.latency_sum_ms += value
        samples = bucket.samples_ms
        if len(samples) < SAMPLES_PER_SECOND:
            samples.append(value)
        else:
            slot = int(self._random.random() * bucket.latency_count)
            if slot < SAMPLES_PER_SECOND:
                samples[slot] = value

    def short_circuited(self, now: float) -> None:
        """Count one call the breaker refused."""
        self._bucket(now).short_circuited += 1

    def fallback(self, now: float, ok: bool) -> None:
        """Count one fallback served, and whether it worked."""
        bucket = self._bucket(now)
        if ok:
            bucket.fallback_success += 1
        else:
            bucket.fallback_failure += 1

    def fields(self, now: float) -> dict[str, Any]:
        """The last ten seconds in Hystrix's field names (latencies in milliseconds, nearest-rank percentiles).

        rollingCountFailure includes timeouts (rollingCountTimeout is the subset that timed out);
        requestCount = successes + failures + short-circuited; errorCount = failures + short-circuited.
        """
        oldest = math.floor(now) - STATS_WINDOW_SECONDS
        live = [b for b in self._buckets if b.second > oldest]
        success = sum(b.success for b in live)
        failure = sum(b.failure for b in live)
        short_circuited = sum(b.short_circuited for b in live)
        latency_count = sum(b.latency_count for b in live)
        latency_sum = sum(b.latency_sum_ms for b in live)
        samples = sorted(value for b in live for value in b.samples_ms)
        errors = failure + short_circuited
        requests = success + errors
        return {
            "errorPercentage": int(errors * 100 / requests) if requests else 0,
            "requestCount": requests,
            "errorCount": errors,
            "rollingCountSuccess": success,
            "rollingCountFailure": failure,
            "rollingCountTimeout": sum(b.timeout for b in live),
            "rollingCountShortCircuited": short_circuited,
            "rollingCountFallbackSuccess": sum(b.fallback_success for b in live),
            "rollingCountFallbackFailure": sum(b.fallback_failure for b in live),
            "rollingCountSlow": sum(b.slow for b in live),
            "latencyTotal_mean": round(latency_sum / latency_count, 3) if latency_count else 0.0,
            "latencyTotal": {p: round(percentile(samples, float(p)), 3) for p in PERCENTILES},
        }
