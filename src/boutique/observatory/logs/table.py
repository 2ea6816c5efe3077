"""Where log records are kept in the store's DuckDB file: the `logs` table (a `SignalTable`).

One row per record. A batch goes in as one Arrow struct array built by nanoarrow from the batch's
lists (one statement per batch: DuckDB inserts row by row at a few thousand rows a second). Attributes
and resource are JSON text, matched by JSON pointer in queries. `trace_key`, the trace id's first
eight bytes as an integer (NULL without a trace), makes finding a trace's records a scan of one integer
column; it has no index: an index would cost a quarter of each commit and memory per record (DuckDB
keeps it in memory), for a lookup that scans a million records in about a millisecond. `stored_seq`
orders the commits: every record of a batch gets one number, larger than any before it, so the live
tail asks for what was stored since the last number it saw.
"""

from __future__ import annotations

import threading
import time

import duckdb
import nanoarrow as na

from boutique.observatory.logs.model import LogBatch
from boutique.observatory.signals import time_range_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    time_us BIGINT NOT NULL,
    observed_us BIGINT NOT NULL,
    stored_seq BIGINT NOT NULL,
    service VARCHAR NOT NULL,
    instance VARCHAR NOT NULL,
    severity UTINYINT NOT NULL,
    severity_text VARCHAR NOT NULL,
    body VARCHAR NOT NULL,
    attributes VARCHAR NOT NULL,
    resource VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    trace_key UBIGINT,
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL
);
"""
# The insert of the incoming array (the commit's sequence number goes in as a literal).
_INSERT = """
INSERT INTO logs (time_us, observed_us, stored_seq, service, instance, severity, severity_text, body,
                  attributes, resource, scope, trace_key, trace_id, span_id)
SELECT time_us, observed_us, {seq}::BIGINT, service, instance, severity, severity_text, body, attributes,
       resource, scope, trace_key, trace_id, span_id
FROM incoming_logs
"""
_STRING, _BINARY = na.c_schema(na.string()), na.c_schema(na.binary())
_INT64, _UINT8, _UINT64 = na.c_schema(na.int64()), na.c_schema(na.uint8()), na.c_schema(na.uint64())
_COLUMNS = {
    "time_us": _INT64,
    "observed_us": _INT64,
    "service": _STRING,
    "instance": _STRING,
    "severity": _UINT8,
    "severity_text": _STRING,
    "body": _STRING,
    "attributes": _STRING,
    "resource": _STRING,
    "scope": _STRING,
    "trace_key": _UINT64,
    "trace_id": _BINARY,
    "span_id": _BINARY,
}
_ROWS = na.c_schema(na.struct(_COLUMNS))


def trace_key(trace_id: bytes) -> int:
    """What a trace lookup compares first: the id's first eight bytes as a big-endian integer (as spans')."""
    return int.from_bytes(trace_id[:8], "big")


def log_rows(batch: LogBatch) -> na.Array:
    """The batch's rows as one Arrow struct array (what `insert` hands DuckDB)."""
    resources = [batch.resources[i] for i in batch.resource_index]
    columns = [
        na.c_array(batch.time_us, _INT64),
        na.c_array(batch.observed_us, _INT64),
        na.c_array([r.service for r in resources], _STRING),
        na.c_array([r.instance for r in resources], _STRING),
        na.c_array(batch.severity, _UINT8),
        na.c_array(batch.severity_text, _STRING),
        na.c_array(batch.body, _STRING),
        na.c_array(batch.attributes, _STRING),
        na.c_array([r.attributes for r in resources], _STRING),
        na.c_array(batch.scope, _STRING),
        na.c_array([trace_key(t) if t else None for t in batch.trace_id], _UINT64),
        na.c_array(batch.trace_id, _BINARY),
        na.c_array(batch.span_id, _BINARY),
    ]
    return na.Array(na.c_array_from_buffers(_ROWS, len(batch), [None], children=columns))


class LogsTable:
    """The `SignalTable` of log records."""

    name = "logs"
    batch_type = LogBatch

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_seq = 0  # the last commit number handed out in this process

    def schema(self) -> str:
        return SCHEMA

    def next_seq(self, db: duckdb.DuckDBPyConnection) -> int:
        """A commit number above every one stored: the clock in µs, pushed past the last one given."""
        with self._lock:
            if not self._last_seq:
                row = db.execute("SELECT max(stored_seq) FROM logs").fetchall()
                self._last_seq = int(row[0][0] or 0)
            self._last_seq = max(time.time_ns() // 1000, self._last_seq + 1)
            return self._last_seq

    def insert(self, db: duckdb.DuckDBPyConnection, batch: LogBatch) -> None:
        """Insert the batch's rows in one statement (inside the store's transaction)."""
        incoming_logs = log_rows(batch)  # noqa: F841  (DuckDB reads it by name: a replacement scan)
        db.execute(_INSERT.format(seq=self.next_seq(db))).fetchall()

    def delete_before(self, db: duckdb.DuckDBPyConnection, cutoff_us: int) -> int:
        """Retention: remove records whose time is before `cutoff_us`; how many went."""
        row = db.execute("DELETE FROM logs WHERE time_us < ?", [cutoff_us]).fetchall()
        return int(row[0][0]) if row else 0

    def time_range(self, db: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
        """(oldest, newest) record time in µs; None when there is none."""
        return time_range_of(db, "logs")


TABLE = LogsTable()
