"""The store's earlier layout (span body, resource and scope as BLOB columns of `spans`) and moving out of it.

A file in that layout is migrated into a new file beside it (`<name>.migrating`), which then replaces
it: bodies go to segment files, resources and scopes to the side tables, the rows to the new file in
chunks, each committed together with the progress it made, the earlier file attached read-only. An
interrupted migration — a crash, a full disk — goes on where it stopped; a finished one leaves one
compact file (migrating in place would leave the file as large as it was, its freed blocks unused).
A layout older still (no tag signatures) is not migrated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from boutique.observatory import tagsig
from boutique.observatory.model import ROOT_PARENT, SpanBatch

EARLIER = "earlier"  # the catalog name the earlier file is attached under
PROGRESS_TABLE = "layout_migration"
CHUNK = 20_000  # rows copied per commit
OLD_COLUMNS = (
    "trace_id, span_id, parent_id, service, operation, kind, start_us, duration_us, status, instance, "
    "body, resource, scope, s0, s1, s2, s3"
)


def span_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Columns of `spans` (empty when there is no such table)."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'spans'"
    ).fetchall()
    return {row[0] for row in rows}


def layout(con: duckdb.DuckDBPyConnection) -> str:
    """`current` (or a new file), `old` (bodies in columns, to migrate) or `unknown`."""
    columns = span_columns(con)
    if not columns or "segment" in columns:
        return "current"
    if {"body", "resource", "scope", "s0", "s1", "s2", "s3"} <= columns:
        return "old"
    return "unknown"


def attach(con: duckdb.DuckDBPyConnection, earlier: str) -> None:
    """Attach the earlier file read-only to the new one's connection."""
    quoted = earlier.replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS {EARLIER} (READ_ONLY)").fetchall()


def start(con: duckdb.DuckDBPyConnection) -> None:
    """Create the progress record in the new file unless it is there (an interrupted migration)."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (next_row BIGINT NOT NULL, done BOOLEAN NOT NULL)"
    ).fetchall()
    if not con.execute(f"SELECT count(*) FROM {PROGRESS_TABLE}").fetchall()[0][0]:
        con.execute(f"INSERT INTO {PROGRESS_TABLE} VALUES (0, false)").fetchall()


def copied_all(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every row is over: the new file may then replace the earlier one."""
    return bool(con.execute(f"SELECT done FROM {PROGRESS_TABLE}").fetchall()[0][0])


@dataclass
class Progress:
    """Where a migration stands: the next row of the earlier file to copy and how many there are."""

    next_row: int
    rows: int

    @property
    def left(self) -> int:
        return max(0, self.rows - self.next_row)


def progress(con: duckdb.DuckDBPyConnection) -> Progress:
    """The migration's progress (the earlier rows are numbered by rowid, which never changes: the earlier
    file is only read)."""
    next_row = con.execute(f"SELECT next_row FROM {PROGRESS_TABLE}").fetchall()[0][0]
    rows = con.execute(f"SELECT count(*) FROM {EARLIER}.spans WHERE rowid >= ?", [next_row]).fetchall()[0][0]
    return Progress(int(next_row), int(next_row) + int(rows))


def chunks(con: duckdb.DuckDBPyConnection, first: int) -> Iterator[tuple[SpanBatch, int]]:
    """Batches of the earlier rows from rowid `first` on, each with the rowid after it."""
    top = con.execute(f"SELECT max(rowid) FROM {EARLIER}.spans").fetchall()[0][0]
    low = first
    while top is not None and low <= top:
        high = low + CHUNK
        rows = con.execute(
            f"SELECT {OLD_COLUMNS} FROM {EARLIER}.spans WHERE rowid >= ? AND rowid < ? ORDER BY rowid",
            [low, high],
        ).fetchall()
        if rows:
            yield batch_of(rows), high
        low = high


def mark(high: int) -> tuple[str, list[int]]:
    """The statement that records a chunk as copied (run in the chunk's own commit)."""
    return f"UPDATE {PROGRESS_TABLE} SET next_row = ?", [high]


def finish(con: duckdb.DuckDBPyConnection) -> None:
    """Record that every row is over and detach the earlier file."""
    con.execute(f"UPDATE {PROGRESS_TABLE} SET done = true").fetchall()
    con.execute(f"DETACH DATABASE IF EXISTS {EARLIER}").fetchall()


def forget(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the progress record (once the new file has replaced the earlier one)."""
    con.execute(f"DROP TABLE IF EXISTS {PROGRESS_TABLE}").fetchall()


def batch_of(rows: list[tuple[Any, ...]]) -> SpanBatch:
    """A columnar batch of rows in the old layout (one Python step per row: migration, not ingest).

    A row whose ids have the wrong width (never stored by a released version) is left out.
    """
    rows = [row for row in rows if len(row[0]) == 16 and len(row[1]) == 8]
    resources: dict[bytes, int] = {}
    services: list[str] = []
    instances: list[str] = []
    scopes: dict[bytes, int] = {}
    resource_index, scope_index, parents = [], [], []
    for row in rows:
        resource, scope = bytes(row[11]), bytes(row[12])
        if resource not in resources:
            resources[resource] = len(resources)
            services.append(str(row[3]))
            instances.append(str(row[9]))
        resource_index.append(resources[resource])
        scope_index.append(scopes.setdefault(scope, len(scopes)))
        parent = bytes(row[2])
        parents.append(parent if len(parent) == 8 else ROOT_PARENT)
    names = [str(row[4]).encode() for row in rows]
    bodies = [bytes(row[10]) for row in rows]

    def offsets(parts: list[bytes]) -> np.ndarray:
        return np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)

    def column(index: int, dtype: type) -> np.ndarray:
        return np.array([row[index] for row in rows], dtype=dtype)

    return SpanBatch(
        size=len(rows),
        trace_id=b"".join(bytes(row[0]) for row in rows),
        span_id=b"".join(bytes(row[1]) for row in rows),
        parent_id=b"".join(parents),
        kind=column(5, np.uint8),
        status=column(8, np.uint8),
        start_us=column(6, np.int64),
        duration_us=column(7, np.int64),
        operation=b"".join(names),
        operation_offsets=offsets(names),
        body=b"".join(bodies),
        body_offsets=offsets(bodies),
        resource_index=np.array(resource_index, dtype=np.int32),
        scope_index=np.array(scope_index, dtype=np.int32),
        resources=list(resources),
        services=services,
        instances=instances,
        scopes=list(scopes),
        signature=np.array([row[13 : 13 + tagsig.WORDS] for row in rows], dtype=np.uint64).reshape(
            -1, tagsig.WORDS
        ),
    )
