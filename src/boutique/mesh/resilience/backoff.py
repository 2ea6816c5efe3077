"""Retry backoff delays: exponential growth with "full jitter" so retrying clients spread out instead of syncing."""

from __future__ import annotations

import random
from collections.abc import Callable

_MAX_EXPONENT = 1000  # 2.0 ** 1000 is still a finite float; anything beyond is capped anyway


def full_jitter(
    attempt: int,
    base: float = 0.025,
    cap: float = 1.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """A delay drawn uniformly from [0, min(cap, base * 2**attempt)] seconds; `attempt` counts from 0."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return rng() * ceiling
