"""Where profile samples are kept in the store's DuckDB file: `profile_samples` and `profile_stacks`.

A stack is stored once (`profile_stacks`, keyed by its 64-bit id, frames root first as a list); each row
of `profile_samples` names its stack by id with its time, service, instance, type, value, thread and
the span it was taken in (`trace_key`, the trace id's first eight bytes as an integer, as the logs
table has it; no index, for the same reason). A batch goes in as two Arrow arrays, one statement each;
retention deletes old rows, then the stacks no row names any more.
"""

from __future__ import annotations

import array

import duckdb
import nanoarrow as na

from boutique.observatory.logs.table import trace_key
from boutique.observatory.profiles.model import ProfileBatch
from boutique.observatory.signals import time_range_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS profile_stacks (
    stack_id UBIGINT PRIMARY KEY,
    frames VARCHAR[] NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_samples (
    time_us BIGINT NOT NULL,
    service VARCHAR NOT NULL,
    instance VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    unit VARCHAR NOT NULL,
    value BIGINT NOT NULL,
    stack_id UBIGINT NOT NULL,
    thread VARCHAR NOT NULL,
    labels VARCHAR NOT NULL,
    resource VARCHAR NOT NULL,
    trace_key UBIGINT,
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL
);
"""
_INSERT_STACKS = "INSERT OR IGNORE INTO profile_stacks SELECT stack_id, frames FROM incoming_stacks"
_INSERT_SAMPLES = """
INSERT INTO profile_samples (time_us, service, instance, type, unit, value, stack_id, thread, labels,
                             resource, trace_key, trace_id, span_id)
SELECT time_us, service, instance, type, unit, value, stack_id, thread, labels, resource, trace_key,
       trace_id, span_id
FROM incoming_samples
"""
_STRING, _BINARY = na.c_schema(na.string()), na.c_schema(na.binary())
_INT64, _UINT64 = na.c_schema(na.int64()), na.c_schema(na.uint64())
_FRAMES = na.c_schema(na.list_(na.string()))
_STACKS = na.c_schema(na.struct({"stack_id": _UINT64, "frames": _FRAMES}))
_SAMPLES = na.c_schema(
    na.struct(
        {
            "time_us": _INT64,
            "service": _STRING,
            "instance": _STRING,
            "type": _STRING,
            "unit": _STRING,
            "value": _INT64,
            "stack_id": _UINT64,
            "thread": _STRING,
            "labels": _STRING,
            "resource": _STRING,
            "trace_key": _UINT64,
            "trace_id": _BINARY,
            "span_id": _BINARY,
        }
    )
)


def stack_rows(batch: ProfileBatch) -> na.Array:
    """The batch's stacks as one Arrow struct array of (stack_id, frames)."""
    ids = list(batch.stacks)
    offsets = array.array("i", [0])
    flat: list[str] = []
    for key in ids:
        flat.extend(batch.stacks[key])
        offsets.append(len(flat))
    frames = na.c_array_from_buffers(
        _FRAMES, len(ids), [None, na.c_buffer(offsets)], children=[na.c_array(flat, _STRING)]
    )
    columns = [na.c_array(ids, _UINT64), frames]
    return na.Array(na.c_array_from_buffers(_STACKS, len(ids), [None], children=columns))


def sample_rows(batch: ProfileBatch) -> na.Array:
    """The batch's rows as one Arrow struct array (what `insert` hands DuckDB)."""
    resources = [batch.resources[i] for i in batch.resource_index]
    columns = [
        na.c_array(batch.time_us, _INT64),
        na.c_array([r.service for r in resources], _STRING),
        na.c_array([r.instance for r in resources], _STRING),
        na.c_array(batch.type, _STRING),
        na.c_array(batch.unit, _STRING),
        na.c_array(batch.value, _INT64),
        na.c_array(batch.stack_id, _UINT64),
        na.c_array(batch.thread, _STRING),
        na.c_array(batch.labels, _STRING),
        na.c_array([r.attributes for r in resources], _STRING),
        na.c_array([trace_key(t) if t else None for t in batch.trace_id], _UINT64),
        na.c_array(batch.trace_id, _BINARY),
        na.c_array(batch.span_id, _BINARY),
    ]
    return na.Array(na.c_array_from_buffers(_SAMPLES, len(batch), [None], children=columns))


class ProfilesTable:
    """The `SignalTable` of profile samples and their stacks."""

    name = "profiles"
    batch_type = ProfileBatch

    def schema(self) -> str:
        return SCHEMA

    def insert(self, db: duckdb.DuckDBPyConnection, batch: ProfileBatch) -> None:
        """Insert the batch's new stacks, then its rows (inside the store's transaction)."""
        incoming_stacks = stack_rows(batch)  # noqa: F841  (DuckDB reads both by name)
        incoming_samples = sample_rows(batch)  # noqa: F841
        db.execute(_INSERT_STACKS).fetchall()
        db.execute(_INSERT_SAMPLES).fetchall()

    def delete_before(self, db: duckdb.DuckDBPyConnection, cutoff_us: int) -> int:
        """Retention: remove rows taken before `cutoff_us`, then stacks no row names; rows removed."""
        row = db.execute("DELETE FROM profile_samples WHERE time_us < ?", [cutoff_us]).fetchall()
        deleted = int(row[0][0]) if row else 0
        if deleted:
            db.execute(
                "DELETE FROM profile_stacks WHERE stack_id NOT IN (SELECT DISTINCT stack_id FROM profile_samples)"
            ).fetchall()
        return deleted

    def time_range(self, db: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
        """(oldest, newest) row time in µs; None when there is none."""
        return time_range_of(db, "profile_samples")


TABLE = ProfilesTable()
