"""What the pipeline and the store need of a batch of any signal (spans, log records, metric points).

Spans keep their own columnar path (`model.SpanBatch`, `store.duckdb_store`); logs and metrics are
`Batch`es stored through a `SignalTable` each, in the same DuckDB file, under the same write lock,
durability and retention as spans (`store.signal_tables` lists them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, Self, TypeVar

import duckdb


class Batch(Protocol):
    """Items of one signal decoded from one request (or several, joined for one commit)."""

    signal: ClassVar[str]  # "spans", "logs" or "metrics": what the pipeline's figures are kept by
    rejected: int  # items of the request refused (reported as the OTLP partial success)
    rejection: str  # why, when any were

    def __len__(self) -> int:
        """Items in the batch (what the pipeline's capacity counts)."""
        ...

    @classmethod
    def concat(cls, batches: Sequence[Self]) -> Self:
        """One batch of all these (the writer's group commit)."""
        ...


class SignalTable(Protocol):
    """How one signal's batches are kept in the store's DuckDB file."""

    name: str  # the signal, e.g. "logs"
    batch_type: type[Any]  # the `Batch` class it stores

    def schema(self) -> str:
        """Idempotent DDL (`CREATE ... IF NOT EXISTS`) of its tables and indexes."""
        ...

    def insert(self, db: duckdb.DuckDBPyConnection, batch: Any) -> None:
        """Insert a batch's rows (inside the store's transaction: no commit here)."""
        ...

    def delete_before(self, db: duckdb.DuckDBPyConnection, cutoff_us: int) -> int:
        """Retention: delete rows whose time is before `cutoff_us`; how many went."""
        ...

    def time_range(self, db: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
        """(oldest, newest) row time in µs, None when empty (the size cut removes the oldest first)."""
        ...


J = TypeVar("J")


def join_rows(joined: J, batches: Sequence[Any], columns: Sequence[str]) -> J:
    """Append every batch's `columns` to `joined`, renumbering `resource_index` into the joined
    `resources` and summing rejections: the `concat` of a batch of per-row lists (logs, profiles)."""
    target: Any = joined
    for batch in batches:
        offset = len(target.resources)
        target.resources.extend(batch.resources)
        target.resource_index.extend(index + offset for index in batch.resource_index)
        for name in columns:
            getattr(target, name).extend(getattr(batch, name))
        target.rejected += batch.rejected
        target.rejection = target.rejection or batch.rejection
    return joined


def time_range_of(db: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int] | None:
    """(oldest, newest) `time_us` of a table's rows, None when it has none (a `SignalTable.time_range`)."""
    row = db.execute(f"SELECT min(time_us), max(time_us) FROM {table}").fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
