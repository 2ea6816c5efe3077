"""What the pipeline and the store need of a batch of any signal (spans, log records, metric points).

Spans keep their own columnar path (`model.SpanBatch`, `store.duckdb_store`); logs and metrics are
`Batch`es stored through a `SignalTable` each, in the same DuckDB file, under the same write lock,
durability and retention as spans (`store.signal_tables` lists them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, Self

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
