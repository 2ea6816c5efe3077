"""Histogram buckets as intervals, and quantiles from bucket counts by linear interpolation.

Every bucket becomes an interval (lo, hi] holding its count:

- explicit buckets, bounds b0 < ... < bm: (-inf, b0] becomes (0, b0] when b0 > 0 (else the point b0),
  (bi, bi+1] stays, and (bm, +inf) becomes the point bm, as Prometheus's `histogram_quantile` treats them;
- exponential buckets of scale s have base 2**(2**-s): positive index i is (base**i, base**(i+1)],
  negative index i is [-base**(i+1), -base**i), the zero bucket [-zero_threshold, zero_threshold].

`quantile` merges any set of such intervals (several series, several bucket layouts, even explicit and
exponential together): the count at or below x is the sum of each bucket's count times the share of
its interval below x, so within one bucket it grows linearly; the quantile is where it reaches q times
the total. With one bucket layout this is exactly Prometheus's interpolation inside the bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def explicit_intervals(bounds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the len(bounds) + 1 buckets of explicit bounds (see the module docstring)."""
    b = np.asarray(bounds, dtype=np.float64)
    if not len(b):
        return np.zeros(0), np.zeros(0)
    first = 0.0 if b[0] > 0 else b[0]
    return np.concatenate(([first], b)), np.concatenate((b, [b[-1]]))


def downscale(index: np.ndarray, by: int) -> np.ndarray:
    """Exponential bucket indexes at a scale `by` lower (each bucket merges 2**by of the finer ones)."""
    return index >> by if by > 0 else index


def exponential_bounds(scale: int, index: np.ndarray) -> np.ndarray:
    """base**index for base 2**(2**-scale): the lower boundary of positive bucket `index`."""
    return np.exp2(index.astype(np.float64) * 2.0**-scale)


def exponential_intervals(
    scale: int,
    negative_low: int,
    negative_width: int,
    positive_low: int,
    positive_width: int,
    zero_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the columns of a dense exponential layout: negative buckets by index from
    `negative_low`, the zero bucket, positive buckets by index from `positive_low`."""
    negative = np.arange(negative_low, negative_low + negative_width)
    positive = np.arange(positive_low, positive_low + positive_width)
    lo = np.concatenate(
        (-exponential_bounds(scale, negative + 1), [-zero_threshold], exponential_bounds(scale, positive))
    )
    hi = np.concatenate(
        (-exponential_bounds(scale, negative), [zero_threshold], exponential_bounds(scale, positive + 1))
    )
    return lo, hi


def quantile(q: float, lo: np.ndarray, hi: np.ndarray, counts: np.ndarray) -> float | None:
    """The q-quantile (0 <= q <= 1) of buckets (lo, hi] holding `counts`; None when they hold nothing."""
    keep = counts > 0
    lo, hi, counts = lo[keep], hi[keep], counts[keep].astype(np.float64)
    total = float(counts.sum())
    if total <= 0:
        return None
    rank = q * total
    points = np.unique(np.concatenate((lo, hi)))
    width = hi - lo
    spread = width > 0
    # The count at or below x is piecewise linear in x: slopes change at interval ends, and a point
    # bucket (lo == hi) is a jump.
    slope_change = np.zeros(len(points))
    rate = counts[spread] / width[spread]
    np.add.at(slope_change, np.searchsorted(points, lo[spread]), rate)
    np.add.at(slope_change, np.searchsorted(points, hi[spread]), -rate)
    jumps = np.zeros(len(points))
    np.add.at(jumps, np.searchsorted(points, hi[~spread]), counts[~spread])
    slope_after = np.cumsum(slope_change)  # the slope just right of each point
    rise = np.concatenate(([0.0], slope_after[:-1] * np.diff(points)))
    below = np.cumsum(rise + jumps)  # the count at or below each point
    reached = np.nonzero(below >= rank * (1 - 1e-12))[0]
    k = int(reached[0]) if len(reached) else len(points) - 1
    if k == 0 or below[k] - jumps[k] < rank or slope_after[k - 1] <= 0:
        return float(points[k])
    return float(points[k - 1] + (rank - below[k - 1]) / slope_after[k - 1])
