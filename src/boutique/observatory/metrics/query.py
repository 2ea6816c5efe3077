"""Metric queries over the store: series lists, one instrument's values per step, exemplars.

A query picks the series of one instrument (name, optionally service, attribute filters) in
`metric_series`, reads their points in the window from `metric_points` (DuckDB, one statement), and
computes per series, per step, in NumPy; series are then combined per group (the `groupBy` labels).

Steps: n = ceil((end - start) / step) steps ending at end, end - step, ...; the point answered for time t
covers (t - step, t].

What each `fn` answers (per series, then combined over the series of a group):

- `value` of a cumulative sum or a gauge, `count` and `sum` of a histogram or summary: the latest point
  at or before t, no older than the lookback (max(step, 5 min)), as a Prometheus instant query reads it;
  summed over series. A delta histogram's `count` and `sum` are its running totals (every delta stored
  up to t). `value` of a delta sum: the deltas whose time is in the step, summed.
- `increase` and `rate` of sums, `count_rate` and `avg` of histograms and summaries: from the series'
  running total R(t). A cumulative series counts from its first point; its values are differences of
  consecutive points, and a counter reset (a new start time, or a monotonic value going down) counts
  the new value from zero at its start time. A delta series adds its deltas, each over its own
  (start, time]. R is linear between points (and between a reset's start and its first point), so the
  increase over a step is R(t) - R(t - step) over the part of the step the series' points cover: the
  steps' increases add up exactly to the increase between any two points. A series whose first point
  starts within the window (start time after the window's beginning minus the lookback) counts that
  point from zero. `rate` and `count_rate` divide by the seconds of the step the series covers; `avg`
  is the increase of the sum over the increase of the count.
- `avg`, `min`, `max` of a gauge: over the points in the step; avg summed over series, min and max the
  least and greatest over series.
- `quantile` of a histogram: from the increase of every bucket over the step (as above), all series of
  the group merged (`buckets.quantile`, Prometheus's interpolation inside a bucket; exponential buckets
  at base 2**(2**-scale), scales merged to the coarsest of a series). Of a summary: the stored quantile
  (which must be one the summary carries) of the latest point, the greatest over series.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from boutique.observatory.metrics import buckets as bk

LOOKBACK_US = 5 * 60 * 1_000_000  # how old a point may be and still be a series' current value
MAX_STEPS = 11_000
FNS: dict[str, tuple[str, ...]] = {
    "sum": ("value", "increase", "rate"),
    "gauge": ("value", "avg", "min", "max"),
    "histogram": ("count", "sum", "count_rate", "avg", "quantile"),
    "exponential_histogram": ("count", "sum", "count_rate", "avg", "quantile"),
    "summary": ("count", "sum", "count_rate", "avg", "quantile"),
}
PSEUDO_LABELS = ("service", "instance")  # group-by and filter keys naming the series' own fields


class QueryError(ValueError):
    """A query that cannot be answered as asked (the API's 400); `name` is the parameter at fault."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def label_text(value: Any) -> str:
    """An attribute value as a label: strings as they are, other values as JSON text."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# ---- series ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesRow:
    """A stored series as queries use it."""

    key: int
    service: str
    instance: str
    name: str
    kind: str
    temporality: str
    monotonic: bool
    unit: str
    description: str
    attributes: dict[str, Any]

    def label(self, key: str) -> str:
        """The value of a group-by or filter key: the service, the instance, else the attribute ("" if absent)."""
        if key == "service":
            return self.service
        if key == "instance":
            return self.instance
        return label_text(self.attributes[key]) if key in self.attributes else ""


_SERIES_SQL = """
SELECT series_key, service, instance, name, kind, temporality, monotonic, unit, description, attributes
FROM metric_series WHERE ($name IS NULL OR name = $name) AND ($service IS NULL OR service = $service)
ORDER BY name, service, instance, attributes
"""


def read_series(db: duckdb.DuckDBPyConnection, name: str | None, service: str | None) -> list[SeriesRow]:
    """The stored series of an instrument name and service (each optional)."""
    rows = db.execute(_SERIES_SQL, {"name": name, "service": service}).fetchall()
    return [
        SeriesRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], json.loads(r[9]))
        for r in rows
    ]


def matching(series: Iterable[SeriesRow], filters: dict[str, frozenset[str]]) -> list[SeriesRow]:
    """The series whose labels (attributes, service, instance) take one of the wanted values of each filter."""
    return [s for s in series if all(s.label(key) in wanted for key, wanted in filters.items())]


def series_list(db: duckdb.DuckDBPyConnection, name: str | None, service: str | None) -> list[dict[str, Any]]:
    """`/api/metrics/series`: each instrument of each service with its labels and their values."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in read_series(db, name, service):
        entry = found.setdefault(
            (s.name, s.service, s.kind, s.unit, s.temporality, s.monotonic),
            {
                "name": s.name,
                "service": s.service,
                "kind": s.kind,
                "unit": s.unit,
                "description": s.description,
                "temporality": s.temporality,
                "monotonic": s.monotonic,
                "labels": {},
            },
        )
        entry["description"] = entry["description"] or s.description
        labels: dict[str, set[str]] = entry["labels"]
        for key, value in s.attributes.items():
            labels.setdefault(key, set()).add(label_text(value))
        if s.instance:
            labels.setdefault("instance", set()).add(s.instance)
    for entry in found.values():
        entry["labels"] = {key: sorted(values) for key, values in sorted(entry["labels"].items())}
    return list(found.values())


# ---- the step grid -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The steps of a query: `n` steps of `step_us` ending at `end_us` (see the module docstring)."""

    end_us: int
    step_us: int
    n: int

    @classmethod
    def of(cls, start_us: int, end_us: int, step_us: int) -> Grid:
        """The grid covering [start, end]; `QueryError` for too many steps."""
        n = max(1, -(-(end_us - start_us) // step_us))
        if n > MAX_STEPS:
            raise QueryError(
                "step", f"gives {n} steps over the window, more than {MAX_STEPS}: use a larger step"
            )
        return cls(end_us, step_us, n)

    @property
    def edges(self) -> np.ndarray:
        """The n + 1 step boundaries, oldest first (step i covers (edges[i], edges[i + 1]])."""
        return self.end_us - self.step_us * np.arange(self.n, -1, -1, dtype=np.int64)

    @property
    def times(self) -> np.ndarray:
        """The time each step's point is labelled with (its end)."""
        return self.edges[1:]

    @property
    def lookback_us(self) -> int:
        return max(self.step_us, LOOKBACK_US)

    @property
    def fetch_from_us(self) -> int:
        """Points after this time are read: the window, and one lookback before it."""
        return int(self.edges[0]) - self.lookback_us

    def step_of(self, times: np.ndarray) -> np.ndarray:
        """The step each time falls in, -1 outside the window."""
        index = self.n - 1 - (self.end_us - times) // self.step_us
        return np.where((times <= self.end_us) & (index >= 0), index, -1)


# ---- reading points ----------------------------------------------------------------------------


@dataclass
class Points:
    """One series' points in time order (one point per time: the last stored wins)."""

    time: np.ndarray  # int64 µs
    start: np.ndarray  # int64 µs, 0 when unknown
    value: np.ndarray  # float64 value of sums and gauges, count of histograms and summaries
    total: np.ndarray  # float64 sum of histograms and summaries (NaN when absent)
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # the bucket or quantile columns, per point


_BUCKET_COLUMNS = {
    "histogram": "bounds, counts",
    "exponential_histogram": (
        "scale, zero_count, zero_threshold, positive_offset, positive_counts, negative_offset, negative_counts"
    ),
    "summary": "quantiles, quantile_values",
}


def read_points(
    db: duckdb.DuckDBPyConnection,
    keys: Sequence[int],
    kind: str,
    after_us: int,
    until_us: int,
    with_buckets: bool,
) -> dict[int, Points]:
    """The points of these series with after < time <= until, by series key."""
    if not keys:
        return {}
    number = "value" if kind in ("sum", "gauge") else "count::DOUBLE"
    total = "NULL::DOUBLE" if kind in ("sum", "gauge") else "sum"
    extra = f", {_BUCKET_COLUMNS[kind]}" if with_buckets and kind in _BUCKET_COLUMNS else ""
    result = db.execute(
        f"SELECT series_key, time_us, start_us, {number} AS v, {total} AS t{extra} FROM metric_points "
        "WHERE series_key IN (SELECT unnest($keys::UBIGINT[])) AND time_us > $after AND time_us <= $until "
        "ORDER BY series_key, time_us",
        {"keys": list(keys), "after": after_us, "until": until_us},
    )
    rows = result.fetchall()
    if not rows:
        return {}
    key = np.fromiter((r[0] for r in rows), dtype=np.uint64, count=len(rows))
    time = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    start = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
    value = np.array([math.nan if r[3] is None else r[3] for r in rows], dtype=np.float64)
    total_ = np.array([math.nan if r[4] is None else r[4] for r in rows], dtype=np.float64)
    # A point sent twice (a retried export) is kept once: the last of each (series, time).
    last = np.ones(len(rows), dtype=np.bool_)
    last[:-1] = (key[1:] != key[:-1]) | (time[1:] != time[:-1])
    found: dict[int, Points] = {}
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    for begin, end in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(rows)])), strict=True):
        keep = np.flatnonzero(last[begin:end]) + begin
        found[int(key[begin])] = Points(
            time=time[keep],
            start=start[keep],
            value=value[keep],
            total=total_[keep],
            rows=[rows[i][5:] for i in keep] if extra else [],
        )
    return found


def delta_totals(
    db: duckdb.DuckDBPyConnection, keys: Sequence[int], before_us: int
) -> dict[int, tuple[float, float]]:
    """(count, sum) of every point of these delta series up to `before_us` (the running totals' start)."""
    if not keys:
        return {}
    rows = db.execute(
        "SELECT series_key, sum(count)::DOUBLE, sum(sum) FROM metric_points "
        "WHERE series_key IN (SELECT unnest($keys::UBIGINT[])) AND time_us <= $before GROUP BY series_key",
        {"keys": list(keys), "before": before_us},
    ).fetchall()
    return {int(k): (float(c or 0.0), float(s or 0.0)) for k, c, s in rows}


# ---- one series: running totals, steps ---------------------------------------------------------


def restarts(points: Points, values: np.ndarray, monotonic: bool) -> np.ndarray:
    """Where a cumulative series starts again: a new known start time, or (monotonic) any value going down."""
    restarted = np.zeros(len(points.time), dtype=np.bool_)
    start = points.start
    restarted[1:] = (start[1:] != start[:-1]) & (start[1:] > 0)
    if monotonic and len(values) > 1:
        drops = values[1:] < values[:-1]
        restarted[1:] |= drops.any(axis=1) if drops.ndim > 1 else drops
    return restarted


def counts_from_zero(points: Points, grid: Grid) -> bool:
    """Whether a cumulative series' first point read counts from zero: it started within what was read."""
    return bool(points.start[0] > 0 and points.start[0] >= grid.fetch_from_us)


def running(
    points: Points, values: np.ndarray, delta: bool, restarted: np.ndarray, from_zero: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The knots (times, running totals) of a series' R(t) (see the module docstring); values k or k by d.

    A delta series adds every value; a cumulative one adds differences, and the whole value where
    `restarted` (and at its first point when `from_zero`).
    """
    time, start = points.time, points.start
    matrix = values.reshape(len(time), -1)
    if delta:
        restarted = np.ones(len(time), dtype=np.bool_)
        from_zero = True
    increments = np.empty_like(matrix)
    increments[0] = matrix[0] if from_zero else 0.0
    increments[1:] = np.where(restarted[1:, None], matrix[1:], matrix[1:] - matrix[:-1])
    totals = np.cumsum(increments, axis=0)
    extra_times, extra_totals = [], []
    if from_zero:
        extra_times.append(start[0] if 0 < start[0] < time[0] else time[0] - 1)
        extra_totals.append(np.zeros(matrix.shape[1]))
    gaps = np.flatnonzero(restarted[1:] & (start[1:] > time[:-1]) & (start[1:] < time[1:])) + 1
    for k in gaps:
        extra_times.append(start[k])
        extra_totals.append(totals[k - 1])
    if not extra_times:
        return time, totals
    knots = np.concatenate((time, np.asarray(extra_times, dtype=np.int64)))
    order = np.argsort(knots, kind="stable")
    return knots[order], np.concatenate((totals, np.asarray(extra_totals)))[order]


def increases(knots: np.ndarray, totals: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Per step: the increase of R over the part of the step the knots cover (steps by d), and that part (µs)."""
    edges = np.clip(grid.edges, knots[0], knots[-1])
    if len(knots) == 1:
        at = np.repeat(totals[:1], len(edges), axis=0)
    else:
        index = np.clip(np.searchsorted(knots, edges, side="right") - 1, 0, len(knots) - 2)
        span = (knots[index + 1] - knots[index]).astype(np.float64)
        weight = (edges - knots[index]) / span
        at = totals[index] + weight[:, None] * (totals[index + 1] - totals[index])
    return np.diff(at, axis=0), np.diff(edges)


def latest(time: np.ndarray, grid: Grid) -> np.ndarray:
    """Per step: the index of the latest point at or before its time within the lookback, -1 if none."""
    index = np.searchsorted(time, grid.times, side="right") - 1
    fresh = (index >= 0) & (grid.times - time[np.maximum(index, 0)] < grid.lookback_us)
    return np.where(fresh, index, -1)


def per_step(points: Points, grid: Grid, values: np.ndarray, how: str) -> np.ndarray:
    """Per step: the sum, mean, min or max of the values of the points in it (NaN when none)."""
    step = grid.step_of(points.time)
    inside = (step >= 0) & ~np.isnan(values)
    step, values = step[inside], values[inside]
    counts = np.bincount(step, minlength=grid.n).astype(np.float64)
    out = np.full(grid.n, np.nan)
    has = counts > 0
    if how in ("sum", "avg"):
        sums = np.bincount(step, weights=values, minlength=grid.n)
        out[has] = sums[has] / (counts[has] if how == "avg" else 1.0)
    elif how == "min":
        least = np.full(grid.n, np.inf)
        np.minimum.at(least, step, values)
        out[has] = least[has]
    else:
        most = np.full(grid.n, -np.inf)
        np.maximum.at(most, step, values)
        out[has] = most[has]
    return out


# ---- histograms: bucket increases --------------------------------------------------------------


@dataclass
class BucketSteps:
    """One bucket layout's intervals and the increase of each bucket per step (steps by buckets)."""

    lo: np.ndarray
    hi: np.ndarray
    increase: np.ndarray


def explicit_steps(points: Points, grid: Grid, delta: bool) -> list[BucketSteps]:
    """Bucket increases per step of an explicit histogram series, one entry per run of equal bounds."""
    found = []
    runs: list[list[int]] = []
    for i, (bounds, counts) in enumerate(points.rows):
        if counts is None:
            runs.append([])
            continue
        if not runs or not runs[-1] or points.rows[runs[-1][-1]][0] != bounds:
            runs.append([])
        runs[-1].append(i)
    for run in runs:
        if not run:
            continue
        index = np.asarray(run)
        part = Points(points.time[index], points.start[index], points.value[index], points.total[index])
        matrix = np.asarray([points.rows[i][1] for i in run], dtype=np.float64)
        restarted = restarts(part, matrix, True)
        # After a change of bounds the first point counts from zero only if it started anew.
        from_zero = (
            counts_from_zero(part, grid) if run[0] == 0 else bool(part.start[0] > points.time[run[0] - 1])
        )
        knots, totals = running(part, matrix, delta, restarted, from_zero)
        growth, _ = increases(knots, totals, grid)
        lo, hi = bk.explicit_intervals(points.rows[run[0]][0])
        found.append(BucketSteps(lo, hi, np.maximum(growth, 0.0)))
    return found


def exponential_steps(points: Points, grid: Grid, delta: bool) -> list[BucketSteps]:
    """Bucket increases per step of an exponential histogram series, at the series' coarsest scale."""
    rows = points.rows
    if not rows:
        return []
    scale = min(int(r[0]) for r in rows)
    negatives: list[tuple[np.ndarray, np.ndarray]] = []
    positives: list[tuple[np.ndarray, np.ndarray]] = []
    for r in rows:
        by = int(r[0]) - scale
        for offset, counts, into in ((r[5], r[6], negatives), (r[3], r[4], positives)):
            index = bk.downscale(np.arange(offset, offset + len(counts or ())), by)
            into.append((index, np.asarray(counts or (), dtype=np.float64)))
    sides = []
    for side in (negatives, positives):
        used = [index for index, _ in side if len(index)]
        low = int(min(i.min() for i in used)) if used else 0
        high = int(max(i.max() for i in used)) if used else -1
        sides.append((low, high - low + 1))
    (negative_low, negative_width), (positive_low, positive_width) = sides
    matrix = np.zeros((len(rows), negative_width + 1 + positive_width))
    for k, r in enumerate(rows):
        index, counts = negatives[k]
        np.add.at(matrix[k], index - negative_low, counts)
        matrix[k, negative_width] = float(r[1] or 0)
        index, counts = positives[k]
        np.add.at(matrix[k], negative_width + 1 + index - positive_low, counts)
    restarted = restarts(points, matrix, True)
    knots, totals = running(points, matrix, delta, restarted, counts_from_zero(points, grid))
    growth, _ = increases(knots, totals, grid)
    threshold = max(float(r[2] or 0.0) for r in rows)
    lo, hi = bk.exponential_intervals(
        scale, negative_low, negative_width, positive_low, positive_width, threshold
    )
    return [BucketSteps(lo, hi, np.maximum(growth, 0.0))]


# ---- the query ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricQuery:
    """One `/api/metrics/query` (see the module docstring for `fn`)."""

    name: str
    service: str | None
    filters: dict[str, frozenset[str]]
    group_by: tuple[str, ...]
    fn: str | None
    quantile: float
    start_us: int
    end_us: int
    step_us: int


Combine = Callable[[list[np.ndarray]], np.ndarray]


def _sum(parts: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(parts)
    total = np.nansum(stacked, axis=0)
    return np.where(np.isnan(stacked).all(axis=0), np.nan, total)


def _min(parts: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(parts)
    least = np.min(np.where(np.isnan(stacked), np.inf, stacked), axis=0)
    return np.where(np.isnan(stacked).all(axis=0), np.nan, least)


def _max(parts: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(parts)
    most = np.max(np.where(np.isnan(stacked), -np.inf, stacked), axis=0)
    return np.where(np.isnan(stacked).all(axis=0), np.nan, most)


def run_query(db: duckdb.DuckDBPyConnection, query: MetricQuery) -> dict[str, Any]:
    """`/api/metrics/query`'s data: the instrument, the fn, the step and a series per group."""
    grid = Grid.of(query.start_us, query.end_us, query.step_us)
    chosen = matching(read_series(db, query.name, query.service), query.filters)
    kinds = sorted({s.kind for s in chosen})
    if len(kinds) > 1:
        raise QueryError(
            "name", f"{query.name!r} names instruments of kinds {', '.join(kinds)}: give a service"
        )
    kind = kinds[0] if kinds else ""
    fn = query.fn or (FNS[kind][0] if kind else "value")
    allowed = FNS.get(kind, tuple(dict.fromkeys(f for fns in FNS.values() for f in fns)))
    if fn not in allowed:
        what = f"a {kind.replace('_', ' ')}" if kind else "a metric"
        raise QueryError("fn", f"{fn!r} does not apply to {what}; use one of {', '.join(allowed)}")
    answer: dict[str, Any] = {
        "name": query.name,
        "unit": chosen[0].unit if chosen else "",
        "kind": kind,
        "fn": fn,
        "step": grid.step_us,
        "series": [],
    }
    if not chosen:
        return answer
    groups: dict[tuple[str, ...], list[SeriesRow]] = {}
    for s in chosen:
        groups.setdefault(tuple(s.label(k) for k in query.group_by), []).append(s)
    with_buckets = fn == "quantile"
    points = read_points(db, [s.key for s in chosen], kind, grid.fetch_from_us, grid.end_us, with_buckets)
    totals: dict[int, tuple[float, float]] = {}
    if fn in ("count", "sum") and kind != "summary":
        deltas = [s.key for s in chosen if s.temporality == "delta"]
        totals = delta_totals(db, deltas, grid.fetch_from_us)
    for labels, members in sorted(groups.items()):
        present = [(s, points[s.key]) for s in members if s.key in points]
        values = (
            _group(fn, kind, present, grid, query.quantile, totals) if present else np.full(grid.n, np.nan)
        )
        answer["series"].append(
            {
                "labels": dict(zip(query.group_by, labels, strict=True)),
                "points": [
                    [int(t), float(v) if math.isfinite(v) else None]
                    for t, v in zip(grid.times, values, strict=True)
                ],
            }
        )
    return answer


def _group(
    fn: str,
    kind: str,
    members: list[tuple[SeriesRow, Points]],
    grid: Grid,
    q: float,
    totals: dict[int, tuple[float, float]],
) -> np.ndarray:
    """The values of one group per step."""
    if fn == "quantile":
        return _quantile(kind, members, grid, q)
    if kind == "gauge":
        if fn == "value":
            return _sum([_instant(p, p.value, grid) for _, p in members])
        how = {"avg": "avg", "min": "min", "max": "max"}[fn]
        combine: Combine = {"avg": _sum, "min": _min, "max": _max}[fn]
        return combine([per_step(p, grid, p.value, how) for _, p in members])
    if kind == "sum" and fn == "value":
        return _sum(
            [
                per_step(p, grid, p.value, "sum") if s.temporality == "delta" else _instant(p, p.value, grid)
                for s, p in members
            ]
        )
    if fn in ("count", "sum"):
        parts = []
        for s, p in members:
            column = p.value if fn == "count" else p.total
            if s.temporality == "delta":
                before = totals.get(s.key, (0.0, 0.0))[0 if fn == "count" else 1]
                column = before + np.cumsum(np.nan_to_num(column))
            parts.append(_instant(p, column, grid))
        return _sum(parts)
    # increase, rate, count_rate, avg: from running totals.
    first_parts, rate_parts, second_parts = [], [], []  # increases of the value or count; rates; of the sum
    for s, p in members:
        delta = s.temporality == "delta"
        if kind == "sum":
            matrix = p.value[:, None]
            monotonic = s.monotonic
        else:
            matrix = np.column_stack((p.value, np.nan_to_num(p.total)))
            monotonic = True
        restarted = restarts(p, matrix[:, :1], monotonic)
        knots, run_totals = running(p, matrix, delta, restarted, counts_from_zero(p, grid))
        growth, covered = increases(knots, run_totals, grid)
        seconds = covered / 1e6
        none = covered <= 0
        first = np.where(none, np.nan, growth[:, 0])
        first_parts.append(first)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate_parts.append(np.where(none, np.nan, growth[:, 0] / seconds))
        if growth.shape[1] > 1:
            second_parts.append(np.where(none, np.nan, growth[:, 1]))
    if fn == "increase":
        return _sum(first_parts)
    if fn in ("rate", "count_rate"):
        return _sum(rate_parts)
    counts, sums = _sum(first_parts), _sum(second_parts)  # avg: Δsum / Δcount
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _instant(points: Points, column: np.ndarray, grid: Grid) -> np.ndarray:
    index = latest(points.time, grid)
    return np.where(index >= 0, column[np.maximum(index, 0)], np.nan)


def _quantile(kind: str, members: list[tuple[SeriesRow, Points]], grid: Grid, q: float) -> np.ndarray:
    if kind == "summary":
        parts = []
        for _, p in members:
            wanted = np.array([_stored_quantile(row, q) for row in p.rows], dtype=np.float64)
            parts.append(_instant(p, wanted, grid))
        return _max(parts)
    layouts: list[BucketSteps] = []
    for s, p in members:
        delta = s.temporality == "delta"
        steps = (
            exponential_steps(p, grid, delta)
            if kind == "exponential_histogram"
            else explicit_steps(p, grid, delta)
        )
        layouts.extend(steps)
    out = np.full(grid.n, np.nan)
    if not layouts:
        return out
    lo = np.concatenate([b.lo for b in layouts])
    hi = np.concatenate([b.hi for b in layouts])
    growth = np.hstack([b.increase for b in layouts])
    for i in range(grid.n):
        found = bk.quantile(q, lo, hi, growth[i])
        if found is not None:
            out[i] = found
    return out


def _stored_quantile(row: tuple[Any, ...], q: float) -> float:
    quantiles, values = row
    for stored, value in zip(quantiles or (), values or (), strict=True):
        if abs(stored - q) < 1e-9:
            return float(value)
    return math.nan


# ---- exemplars ---------------------------------------------------------------------------------


def exemplars(
    db: duckdb.DuckDBPyConnection,
    name: str,
    service: str | None,
    filters: dict[str, frozenset[str]],
    start_us: int,
    end_us: int,
    limit: int,
) -> list[dict[str, Any]]:
    """`/api/metrics/exemplars`: the newest `limit` exemplars of the matching series in the window, oldest first."""
    chosen = {s.key: s for s in matching(read_series(db, name, service), filters)}
    if not chosen:
        return []
    rows = db.execute(
        "SELECT series_key, time_us, value, trace_id, span_id, attributes FROM metric_exemplars "
        "WHERE series_key IN (SELECT unnest($keys::UBIGINT[])) AND time_us >= $start AND time_us <= $end "
        "ORDER BY time_us DESC LIMIT $limit",
        {"keys": list(chosen), "start": start_us, "end": end_us, "limit": limit},
    ).fetchall()
    found = []
    for key, time, value, trace_id, span_id, extra in reversed(rows):
        s = chosen[int(key)]
        labels = {k: label_text(v) for k, v in s.attributes.items()}
        labels.update({k: label_text(v) for k, v in json.loads(extra).items()})
        found.append(
            {
                "time": int(time),
                "value": float(value),
                "traceID": bytes(trace_id).hex() if trace_id else "",
                "spanID": bytes(span_id).hex() if span_id else "",
                "labels": labels,
                "service": s.service,
                "instance": s.instance,
            }
        )
    return found
