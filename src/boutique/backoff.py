"""Retry backoff for every loop here that tries again: exponential growth to a cap, with jitter.

One formula: the ceiling `min(cap, base * 2**attempt)` times a uniform draw from a `spread`. Full
jitter (0 to 1) spreads retrying clients out most and suits calls that race each other; equal jitter
(½ to 1) never retries a backend that is down sooner than half the ceiling; a narrow spread around 1
keeps a reconnecting watcher or sender close to its schedule. Free of imports beyond the standard library, so
the mesh and the observatory share it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

FULL_JITTER = (0.0, 1.0)
EQUAL_JITTER = (0.5, 1.0)
AROUND = (0.8, 1.2)  # within 20 % of the ceiling either way
NO_JITTER = (1.0, 1.0)  # exactly the ceiling: one process restarting, nobody to spread out from
_MAX_EXPONENT = 1000  # 2.0 ** 1000 is still a finite float; anything beyond is capped anyway


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    spread: tuple[float, float] = FULL_JITTER,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry `attempt` (from 0): min(cap, base * 2**attempt) times U(spread)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    low, high = spread
    return ceiling * (low + (high - low) * rng())


def full_jitter(
    attempt: int,
    base: float = 0.025,
    cap: float = 1.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """A delay drawn uniformly from [0, min(cap, base * 2**attempt)] seconds; `attempt` counts from 0."""
    return backoff_delay(attempt, base, cap, FULL_JITTER, rng)
