"""Where metrics are kept in the store's DuckDB file (a `SignalTable`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import duckdb


@dataclass
class MetricBatch:
    """Placeholder until the metrics model lands."""

    size: int = 0
    rejected: int = 0
    rejection: str = ""

    def __len__(self) -> int:
        return self.size

    @classmethod
    def concat(cls, batches: Sequence[Self]) -> Self:
        return cls(sum(b.size for b in batches))


class _Table:
    name = "metrics"
    batch_type = MetricBatch

    def schema(self) -> str:
        return ""

    def insert(self, db: duckdb.DuckDBPyConnection, batch: MetricBatch) -> None:
        return None

    def delete_before(self, db: duckdb.DuckDBPyConnection, cutoff_us: int) -> int:
        return 0

    def time_range(self, db: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
        return None


TABLE = _Table()
