"""A breaker's rolling statistics alone: ten one-second buckets summed into Hystrix's stream fields."""

from __future__ import annotations

import pytest

from boutique.mesh.resilience.breaker_stats import (
    PERCENTILES,
    SAMPLES_PER_SECOND,
    STATS_WINDOW_SECONDS,
    RollingStats,
    percentile,
)


def test_percentile_is_nearest_rank() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile([], 50) == 0.0
    assert percentile(values, 0) == 10.0
    assert percentile(values, 25) == 10.0
    assert percentile(values, 26) == 20.0
    assert percentile(values, 50) == 20.0
    assert percentile(values, 75) == 30.0
    assert percentile(values, 99.5) == 40.0
    assert percentile(values, 100) == 40.0
    assert percentile([7.0], 90) == 7.0


def test_empty_statistics_are_all_zero() -> None:
    fields = RollingStats().fields(1000.0)
    latencies = fields.pop("latencyTotal")
    assert len(fields) == 11 and all(value == 0 for value in fields.values()), fields
    assert latencies == {p: 0.0 for p in PERCENTILES}


def test_counts_and_what_requests_and_errors_are_made_of() -> None:
    stats = RollingStats()
    for _ in range(6):
        stats.record(1000.1, False, False, False, 0.010)
    stats.record(1000.2, False, True, True, 0.500)  # a slow success: `timeout` only counts on failures
    stats.record(1000.3, True, False, False, 0.020)
    stats.record(1001.4, True, True, True, 1.000)  # a timeout is a failure too
    stats.short_circuited(1001.5)
    stats.short_circuited(1002.0)
    stats.fallback(1002.1, ok=True)
    stats.fallback(1002.2, ok=True)
    stats.fallback(1002.3, ok=False)
    fields = stats.fields(1003.0)
    assert fields["rollingCountSuccess"] == 7
    assert fields["rollingCountFailure"] == 2
    assert fields["rollingCountTimeout"] == 1
    assert fields["rollingCountSlow"] == 2
    assert fields["rollingCountShortCircuited"] == 2
    assert fields["rollingCountFallbackSuccess"] == 2 and fields["rollingCountFallbackFailure"] == 1
    assert fields["requestCount"] == 11  # successes + failures + short-circuited
    assert fields["errorCount"] == 4  # failures + short-circuited
    assert fields["errorPercentage"] == 36  # 4 / 11 = 36.4 %, truncated


def test_latencies_in_milliseconds_mean_and_percentiles() -> None:
    stats = RollingStats()
    for ms in (5, 1, 4, 2, 3):
        stats.record(2000.0, False, False, False, ms / 1000)
    stats.record(2001.0, True, False, False, 0.1)
    fields = stats.fields(2001.5)
    assert fields["latencyTotal_mean"] == pytest.approx(115 / 6, abs=0.001)
    assert fields["latencyTotal"] == pytest.approx(
        {"0": 1, "25": 2, "50": 3, "75": 5, "90": 100, "95": 100, "99": 100, "99.5": 100, "100": 100}
    )


def test_seconds_older_than_the_window_drop_out() -> None:
    stats = RollingStats()
    stats.record(3000.5, True, False, False, 0.2)
    stats.short_circuited(3000.5)
    stats.fallback(3000.5, ok=True)
    stats.record(3004.5, False, False, False, 0.05)
    assert stats.fields(3000.0 + STATS_WINDOW_SECONDS - 0.1)["requestCount"] == 3
    later = stats.fields(3000.0 + STATS_WINDOW_SECONDS)
    assert later["requestCount"] == 1 and later["rollingCountFallbackSuccess"] == 0
    assert later["latencyTotal"]["100"] == pytest.approx(50.0)
    stats.record(3010.5, False, False, False, 0.001)  # second 3000's ring slot, reused
    reused = stats.fields(3010.5)
    assert reused["rollingCountFailure"] == 0 and reused["rollingCountSuccess"] == 2
    assert stats.fields(3100.0)["requestCount"] == 0


def test_latency_samples_stay_bounded_and_later_calls_still_reach_the_percentiles() -> None:
    stats = RollingStats()
    for _ in range(SAMPLES_PER_SECOND):
        stats.record(4000.0, False, False, False, 0.001)
    for _ in range(20 * SAMPLES_PER_SECOND):
        stats.record(4000.0, False, False, False, 1.0)
    fields = stats.fields(4000.5)
    calls = 21 * SAMPLES_PER_SECOND
    assert fields["rollingCountSuccess"] == calls
    assert fields["latencyTotal_mean"] == pytest.approx(
        (SAMPLES_PER_SECOND + 20_000 * SAMPLES_PER_SECOND) / calls
    )
    assert fields["latencyTotal"]["50"] == pytest.approx(1000.0), "the sample kept only the first calls"
    kept = max(len(bucket.samples_ms) for bucket in stats._buckets)
    assert kept == SAMPLES_PER_SECOND
