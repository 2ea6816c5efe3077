"""The retry budget (steady-state bound, refill, exhaustion) and full-jitter backoff bounds."""

from __future__ import annotations

import random

import pytest

from boutique.mesh.resilience import RetryBudget, full_jitter
from tests.support import ManualClock

Clock = ManualClock


def drive(
    budget: RetryBudget, clock: ManualClock, seconds: int, per_second: int, retries_each: int
) -> list[int]:
    """Send `per_second` requests a second, each wanting `retries_each` retries; retries granted per second."""
    granted = []
    for second in range(seconds):
        this_second = 0
        for n in range(per_second):
            clock.now = second + n / per_second
            budget.record_request()
            for _ in range(retries_each):
                if not budget.try_withdraw():
                    break
                this_second += 1
        granted.append(this_second)
    return granted


def test_retries_stay_within_twenty_percent_plus_reserve_over_1000_requests() -> None:
    clock = Clock()
    budget = RetryBudget(clock=clock)
    granted = drive(budget, clock, seconds=10, per_second=100, retries_each=3)  # 1,000 requests
    allowed = 0.2 * 1000 + 10 * 10
    assert sum(granted) <= allowed
    assert sum(granted) >= allowed - 3, "the budget refused retries it had room for"
    assert budget.exhausted_count > 0


def test_steady_state_every_window_is_bounded_and_the_budget_is_used() -> None:
    clock = Clock()
    budget = RetryBudget(clock=clock)
    granted = drive(budget, clock, seconds=30, per_second=100, retries_each=3)
    for start in range(0, 21):
        window = sum(granted[start : start + 10])
        assert window <= 0.2 * 1000 + 10 * 10, f"window starting at {start}s granted {window}"
    assert sum(granted) <= 0.2 * 3000 + 10 * 30
    assert sum(granted) >= 0.9 * (0.2 * 3000 + 10 * 30)


def test_without_a_reserve_only_the_ratio_applies() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, clock=clock)
    assert not budget.try_withdraw()
    for _ in range(10):
        budget.record_request()
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
    assert budget.exhausted_count == 2


def test_budget_refills_as_the_window_slides() -> None:
    clock = Clock(100.0)
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=10.0, clock=clock)
    for _ in range(10):
        budget.record_request()
    granted = 0
    while budget.try_withdraw():
        granted += 1
    assert granted == 12  # 20 % of 10 requests + 1/s over 10 s
    assert budget.balance == pytest.approx(0.0)
    clock.now = 109.5
    assert not budget.try_withdraw(), "refilled before the spent retries left the window"
    clock.now = 110.0
    assert budget.balance == pytest.approx(10.0)  # the requests left too: only the reserve remains
    assert sum(budget.try_withdraw() for _ in range(15)) == 10
    assert budget.exhausted_count == 1 + 1 + 5


def test_budget_rejects_bad_settings() -> None:
    for bad in ({"ratio": -0.1}, {"min_per_second": -1.0}, {"window_seconds": 0.0}):
        with pytest.raises(ValueError):
            RetryBudget(**bad)  # type: ignore[arg-type]


def test_full_jitter_stays_within_its_bounds() -> None:
    rng = random.Random(7).random
    for attempt in range(12):
        ceiling = min(1.0, 0.025 * 2**attempt)
        samples = [full_jitter(attempt, rng=rng) for _ in range(2000)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert min(samples) < 0.05 * ceiling, "not full jitter: small delays never drawn"
        assert max(samples) > 0.95 * ceiling, "the range does not reach the ceiling"


def test_full_jitter_ceiling_doubles_then_caps() -> None:
    top = lambda: 1.0  # noqa: E731 — the largest value the generator could give
    assert [full_jitter(a, base=0.1, cap=1.0, rng=top) for a in range(6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert full_jitter(5000, rng=top) == 1.0
    assert full_jitter(3, rng=lambda: 0.0) == 0.0
    with pytest.raises(ValueError):
        full_jitter(-1)
