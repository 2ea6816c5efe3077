"""The one backoff formula: ceiling min(cap, base * 2**attempt), times a draw from the spread."""

from __future__ import annotations

import random

import pytest

from boutique.backoff import AROUND, EQUAL_JITTER, FULL_JITTER, NO_JITTER, backoff_delay, full_jitter
from boutique.mesh.discovery import RetryPolicy


def test_the_ceiling_doubles_then_stays_at_the_cap() -> None:
    top = [backoff_delay(n, 0.5, 30.0, NO_JITTER) for n in range(8)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(10_000, 0.5, 30.0, NO_JITTER) == 30.0


@pytest.mark.parametrize("spread", [FULL_JITTER, EQUAL_JITTER, AROUND], ids=["full", "equal", "around"])
def test_every_delay_lies_within_the_spread_of_its_ceiling(spread: tuple[float, float]) -> None:
    rng = random.Random(13).random
    low, high = spread
    for attempt in range(12):
        ceiling = min(5.0, 0.1 * 2**attempt)
        samples = [backoff_delay(attempt, 0.1, 5.0, spread, rng) for _ in range(500)]
        assert min(samples) >= ceiling * low and max(samples) <= ceiling * high
        assert max(samples) - min(samples) > ceiling * (high - low) * 0.8  # spread out, not one value


def test_the_named_uses_are_the_one_formula() -> None:
    assert full_jitter(3, 0.1, 1.0, rng=lambda: 0.5) == backoff_delay(3, 0.1, 1.0, FULL_JITTER, lambda: 0.5)
    policy = RetryPolicy(base=0.1, cap=2.0)
    assert policy.delay(4, rand=lambda: 0.25) == backoff_delay(4, 0.1, 2.0, EQUAL_JITTER, lambda: 0.25)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, 0.1, 1.0)
    with pytest.raises(ValueError, match="base and cap"):
        backoff_delay(0, -0.1, 1.0)
