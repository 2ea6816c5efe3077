"""Where metrics are kept in the store's DuckDB file (a `SignalTable`): series, points and exemplars.

- `metric_series`: one row per time series (see `model.Series`): its key, service, instance, instrument
  (name, kind, temporality, monotonic, unit, description, scope), attributes and resource as JSON text.
  A few thousand rows; queries pick series here first, then read their points.
- `metric_points`: one row per data point: series key, time and start (µs), the value of a sum or
  gauge, or a histogram's count, sum, min, max with its buckets as LIST columns (explicit bounds and
  counts; exponential scale, zero bucket, positive and negative offset and counts), or a summary's
  quantiles. Points arrive in roughly time order, so DuckDB's zone maps on `time_us` prune a time range
  without an index (an index would cost every insert).
- `metric_exemplars`: the exemplars of the points, with their trace and span ids.

A batch is inserted with one statement per table, each reading an Arrow array of the batch's rows
(`metrics.columns`); series already stored are skipped by the insert itself.
"""

from __future__ import annotations

import duckdb
import nanoarrow as na

from boutique.observatory.metrics import columns as c
from boutique.observatory.metrics.model import (
    EXEMPLAR_COLUMNS,
    POINT_COLUMNS,
    SERIES_COLUMNS,
    MetricBatch,
)
from boutique.observatory.signals import time_range_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS metric_series (
    series_key UBIGINT NOT NULL,
    service VARCHAR NOT NULL,
    instance VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    temporality VARCHAR NOT NULL,
    monotonic BOOLEAN NOT NULL,
    scope VARCHAR NOT NULL,
    attributes VARCHAR NOT NULL,
    unit VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    resource VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS metric_points (
    series_key UBIGINT NOT NULL,
    time_us BIGINT NOT NULL,
    start_us BIGINT NOT NULL,
    value DOUBLE,
    count UBIGINT,
    sum DOUBLE,
    min DOUBLE,
    max DOUBLE,
    bounds DOUBLE[],
    counts UBIGINT[],
    scale INTEGER,
    zero_count UBIGINT,
    zero_threshold DOUBLE,
    positive_offset INTEGER,
    positive_counts UBIGINT[],
    negative_offset INTEGER,
    negative_counts UBIGINT[],
    quantiles DOUBLE[],
    quantile_values DOUBLE[]
);
CREATE TABLE IF NOT EXISTS metric_exemplars (
    series_key UBIGINT NOT NULL,
    time_us BIGINT NOT NULL,
    value DOUBLE NOT NULL,
    trace_id BLOB,
    span_id BLOB,
    attributes VARCHAR NOT NULL
);
"""

SERIES_KINDS = {
    "series_key": c.UBIGINT,
    "monotonic": c.BOOLEAN,
    **{name: c.TEXT for name in SERIES_COLUMNS if name not in ("series_key", "monotonic")},
}
POINT_KINDS = {
    "series_key": c.UBIGINT,
    "time_us": c.BIGINT,
    "start_us": c.BIGINT,
    "value": c.DOUBLE,
    "count": c.UBIGINT,
    "sum": c.DOUBLE,
    "min": c.DOUBLE,
    "max": c.DOUBLE,
    "bounds": c.DOUBLES,
    "counts": c.COUNTS,
    "scale": c.INTEGER,
    "zero_count": c.UBIGINT,
    "zero_threshold": c.DOUBLE,
    "positive_offset": c.INTEGER,
    "positive_counts": c.COUNTS,
    "negative_offset": c.INTEGER,
    "negative_counts": c.COUNTS,
    "quantiles": c.DOUBLES,
    "quantile_values": c.DOUBLES,
}
EXEMPLAR_KINDS = {
    "series_key": c.UBIGINT,
    "time_us": c.BIGINT,
    "value": c.DOUBLE,
    "trace_id": c.BLOB,
    "span_id": c.BLOB,
    "attributes": c.TEXT,
}
_SERIES = ", ".join(SERIES_COLUMNS)
_POINTS = ", ".join(POINT_COLUMNS)
_EXEMPLARS = ", ".join(EXEMPLAR_COLUMNS)


def _insert(db: duckdb.DuckDBPyConnection, statement: str, incoming: na.Array) -> None:
    """Run an insert reading `incoming` (DuckDB finds the local variable by its name)."""
    db.execute(statement).fetchall()


class MetricsTable:
    """The metrics signal's tables (see the module docstring)."""

    name = "metrics"
    batch_type = MetricBatch

    def schema(self) -> str:
        """Idempotent DDL of the three tables."""
        return SCHEMA

    def insert(self, db: duckdb.DuckDBPyConnection, batch: MetricBatch) -> None:
        """Insert the batch's new series, its points and its exemplars (no commit: the store's)."""
        incoming = c.build([s.row() for s in batch.series.values()], SERIES_COLUMNS, SERIES_KINDS)
        _insert(
            db,
            f"INSERT INTO metric_series ({_SERIES}) SELECT {_SERIES} FROM incoming "
            "WHERE series_key NOT IN (SELECT series_key FROM metric_series)",
            incoming,
        )
        incoming = c.build(batch.points, POINT_COLUMNS, POINT_KINDS)
        _insert(db, f"INSERT INTO metric_points ({_POINTS}) SELECT {_POINTS} FROM incoming", incoming)
        if batch.exemplars:
            incoming = c.build(batch.exemplars, EXEMPLAR_COLUMNS, EXEMPLAR_KINDS)
            _insert(
                db, f"INSERT INTO metric_exemplars ({_EXEMPLARS}) SELECT {_EXEMPLARS} FROM incoming", incoming
            )

    def delete_before(self, db: duckdb.DuckDBPyConnection, cutoff_us: int) -> int:
        """Delete points and exemplars older than `cutoff_us`, then series left without points; points gone."""
        row = db.execute("DELETE FROM metric_points WHERE time_us < ?", [cutoff_us]).fetchone()
        deleted = int(row[0]) if row else 0
        db.execute("DELETE FROM metric_exemplars WHERE time_us < ?", [cutoff_us]).fetchall()
        if deleted:
            db.execute(
                "DELETE FROM metric_series WHERE series_key NOT IN (SELECT DISTINCT series_key FROM metric_points)"
            ).fetchall()
        return deleted

    def time_range(self, db: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
        """(oldest, newest) point time in µs, None when no point is stored."""
        return time_range_of(db, "metric_points")


TABLE = MetricsTable()
