"""The DuckDB span store: one row per span in one file, bulk Arrow appends, an ART index on trace id.

Ingest writes from one thread through one connection; queries run on cursors of their own (DuckDB's
MVCC lets them read while the writer appends). Tag conditions are pushed into SQL as byte needles
for exact matches and checked exactly in Python on the decoded candidates, so every operator works
on the verbatim span bodies the store keeps.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from boutique.observatory.decode import span_from_row
from boutique.observatory.model import BATCH_COLUMNS, KIND_NUMBERS, STATUS_ERROR, Span, SpanBatch
from boutique.observatory.store.base import Dependency, RedPoint, TagCondition, TraceQuery

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_id BLOB NOT NULL,
    service VARCHAR NOT NULL,
    operation VARCHAR NOT NULL,
    kind UTINYINT NOT NULL,
    start_us BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    status UTINYINT NOT NULL,
    instance VARCHAR NOT NULL,
    body BLOB NOT NULL,
    resource BLOB NOT NULL,
    scope BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id);
"""

ARROW_SCHEMA = pa.schema(
    [
        ("trace_id", pa.binary()),
        ("span_id", pa.binary()),
        ("parent_id", pa.binary()),
        ("service", pa.string()),
        ("operation", pa.string()),
        ("kind", pa.uint8()),
        ("start_us", pa.int64()),
        ("duration_us", pa.int64()),
        ("status", pa.uint8()),
        ("instance", pa.string()),
        ("body", pa.binary()),
        ("resource", pa.binary()),
        ("scope", pa.binary()),
    ]
)
assert tuple(ARROW_SCHEMA.names) == BATCH_COLUMNS

ROW = ", ".join(BATCH_COLUMNS)
SCAN_CHUNK = 4096  # candidate spans decoded per round when tag conditions need checking in Python
SPECIAL_TAGS = ("error", "span.kind", "otel.status_code")


def _decided_in_sql(tag: TagCondition) -> bool:
    """Whether SQL decides the condition alone: `=`/`!=` on a tag the store synthesizes from columns.

    `error` is the span status only for true/false (another value is an attribute named "error");
    prefix and regex conditions on synthesized tags are checked in Python like any other tag.
    """
    if tag.op not in ("=", "!=") or tag.key not in SPECIAL_TAGS:
        return False
    return tag.key != "error" or tag.value in ("true", "false")


@dataclass(frozen=True)
class Retention:
    """How long spans are kept and how much space they may use."""

    max_age_us: int = 24 * 3600 * 1_000_000
    max_bytes: int = 1 << 30


def _needles(condition: TagCondition) -> list[str]:
    """Hex of the serialized KeyValues an exact `key=value` match must contain, one per value type."""
    values = [AnyValue(string_value=condition.value)]
    text = condition.value
    if text in ("true", "false"):
        values.append(AnyValue(bool_value=text == "true"))
    with contextlib.suppress(ValueError):
        number = int(text)
        if -(2**63) <= number < 2**63:
            values.append(AnyValue(int_value=number))
    with contextlib.suppress(ValueError):
        values.append(AnyValue(double_value=float(text)))
    return [KeyValue(key=condition.key, value=v).SerializeToString().hex().upper() for v in values]


class DuckDBStore:
    """Spans in a DuckDB file (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        retention: Retention | None = None,
        memory_limit: str = "256MB",
        threads: int = 2,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention or Retention()
        self._db = duckdb.connect(str(self.path), config={"memory_limit": memory_limit, "threads": threads})
        self._db.execute(SCHEMA)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False

    # ---- writing -----------------------------------------------------------------------------

    def append(self, batch: SpanBatch) -> None:
        """Append a batch in one Arrow insert (committed when this returns)."""
        if not len(batch):
            return
        columns = batch.columns()
        table = pa.Table.from_arrays(
            [pa.array(columns[f.name], type=f.type) for f in ARROW_SCHEMA], schema=ARROW_SCHEMA
        )
        with self._write_lock:
            self._db.register("incoming_spans", table)
            try:
                self._db.execute(f"INSERT INTO spans SELECT {ROW} FROM incoming_spans").fetchall()
            finally:
                self._db.unregister("incoming_spans")

    def enforce_retention(self, now_us: int | None = None) -> int:
        """Drop spans past the age limit, then the oldest until the used size is under the limit."""
        now_us = int(time.time() * 1_000_000) if now_us is None else now_us
        dropped = 0
        with self._write_lock:
            before = self._count(self._db)
            self._db.execute(
                "DELETE FROM spans WHERE start_us < ?", [now_us - self.retention.max_age_us]
            ).fetchall()
            used = self._used_bytes(self._db)
            if used > self.retention.max_bytes:
                total = self._count(self._db)
                # Keep a tenth of headroom so the next check does not delete again at once.
                share = min(1.0, 1.0 - (self.retention.max_bytes * 0.9) / used)
                cut = self._one(self._db, "SELECT quantile_disc(start_us, ?) FROM spans", [share])
                if total and cut and cut[0] is not None:
                    self._db.execute("DELETE FROM spans WHERE start_us <= ?", [cut[0]]).fetchall()
            dropped = before - self._count(self._db)
            if dropped:
                self._db.execute("CHECKPOINT").fetchall()
        return dropped

    @staticmethod
    def _one(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, with the result consumed (DuckDB wants that before the next statement)."""
        rows = con.execute(sql, list(params)).fetchall()
        return rows[0] if rows else None

    def _count(self, con: duckdb.DuckDBPyConnection) -> int:
        row = self._one(con, "SELECT count(*) FROM spans")
        return int(row[0]) if row else 0

    def _used_bytes(self, con: duckdb.DuckDBPyConnection) -> int:
        """Blocks in use by the database plus its write-ahead log not yet checkpointed."""
        row = self._one(con, "SELECT used_blocks * block_size FROM pragma_database_size()")
        wal = self.path.with_name(self.path.name + ".wal")
        return (int(row[0]) if row else 0) + (wal.stat().st_size if wal.exists() else 0)

    # ---- reading -----------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of this thread's own (DuckDB connections are not shared across threads)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._db.cursor()
        return cursor

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cursor().execute(sql, list(params)).fetchall()

    def services(self) -> list[str]:
        """Every service with stored spans, sorted."""
        return [r[0] for r in self._rows("SELECT DISTINCT service FROM spans ORDER BY service")]

    def operations(self, service: str | None, span_kind: int | None = None) -> list[tuple[str, int]]:
        """(operation, kind) pairs, sorted."""
        where: list[str] = []
        params: list[Any] = []
        if service is not None:
            where.append("service = ?")
            params.append(service)
        if span_kind is not None:
            where.append("kind = ?")
            params.append(span_kind)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT DISTINCT operation, kind FROM spans {clause} ORDER BY operation, kind"
        return [(r[0], int(r[1])) for r in self._rows(sql, params)]

    def traces(self, trace_ids: Sequence[bytes]) -> list[list[Span]]:
        """The spans of each trace found, in the order asked, each sorted by start."""
        if not trace_ids:
            return []
        placeholders = ", ".join("?" for _ in trace_ids)
        rows = self._rows(
            f"SELECT {ROW} FROM spans WHERE trace_id IN ({placeholders}) ORDER BY start_us, span_id",
            list(trace_ids),
        )
        grouped: dict[bytes, list[Span]] = {bytes(t): [] for t in trace_ids}
        seen: dict[bytes, set[bytes]] = {bytes(t): set() for t in trace_ids}
        for row in rows:
            trace_id, span_id = bytes(row[0]), bytes(row[1])
            if span_id in seen[trace_id]:
                continue  # a span sent twice (an exporter retry) is shown once
            seen[trace_id].add(span_id)
            grouped[trace_id].append(span_from_row(*row))
        return [spans for spans in grouped.values() if spans]

    def find_traces(self, query: TraceQuery) -> list[bytes]:
        """Ids of matching traces, newest first (or by their longest matching span)."""
        where, params = self._conditions(query)
        python_checks = [t for t in query.tags if not _decided_in_sql(t)]
        if not python_checks:
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            key = "max(duration_us)" if query.order == "duration" else "max(start_us)"
            sql = f"SELECT trace_id, {key} AS k FROM spans {clause} GROUP BY trace_id ORDER BY k DESC LIMIT ?"
            return [bytes(r[0]) for r in self._rows(sql, [*params, query.limit])]
        # Candidates newest (or longest) first, a chunk at a time; each page starts after the last row
        # seen (keyset paging), so spans arriving meanwhile neither shift nor repeat the pages.
        column = "duration_us" if query.order == "duration" else "start_us"
        found: dict[bytes, None] = {}
        after: tuple[int, bytes] | None = None
        while len(found) < query.limit:
            page_where, page_params = list(where), list(params)
            if after is not None:
                page_where.append(f"({column} < ? OR ({column} = ? AND span_id > ?))")
                page_params += [after[0], after[0], after[1]]
            clause = f"WHERE {' AND '.join(page_where)}" if page_where else ""
            sql = f"SELECT {ROW}, {column} FROM spans {clause} ORDER BY {column} DESC, span_id LIMIT ?"
            rows = self._rows(sql, [*page_params, SCAN_CHUNK])
            for row in rows:
                trace_id = bytes(row[0])
                if trace_id in found:
                    continue
                span = span_from_row(*row[:-1])
                if all(c.matches(span) for c in python_checks):
                    found[trace_id] = None
                    if len(found) >= query.limit:
                        break
            if len(rows) < SCAN_CHUNK:
                break
            after = (int(rows[-1][-1]), bytes(rows[-1][1]))
        return list(found)

    def _conditions(self, query: TraceQuery) -> tuple[list[str], list[Any]]:
        """SQL conditions and parameters for everything SQL can decide about one span."""
        where: list[str] = []
        params: list[Any] = []

        def add(sql: str, *values: Any) -> None:
            where.append(sql)
            params.extend(values)

        if query.service is not None:
            add("service = ?", query.service)
        if query.operation is not None:
            add("operation = ?", query.operation)
        if query.span_kind is not None:
            add("kind = ?", query.span_kind)
        if query.instance is not None:
            add("instance = ?", query.instance)
        if query.min_duration_us is not None:
            add("duration_us >= ?", query.min_duration_us)
        if query.max_duration_us is not None:
            add("duration_us <= ?", query.max_duration_us)
        if query.start_us is not None:
            add("start_us >= ?", query.start_us)
        if query.end_us is not None:
            add("start_us <= ?", query.end_us)
        if query.errors_only:
            add("status = ?", STATUS_ERROR)
        for tag in query.tags:
            self._special_or_needle(tag, add)
        return where, params

    @staticmethod
    def _special_or_needle(tag: TagCondition, add: Any) -> None:
        """Push a tag condition into SQL: exactly for the synthesized tags, as a prefilter for `=`."""
        if _decided_in_sql(tag):
            wanted = tag.op == "="
            if tag.key == "error":
                add("(status = ?) = ?", STATUS_ERROR, (tag.value == "true") == wanted)
            elif tag.key == "span.kind":
                add("kind = ?" if wanted else "kind <> ?", KIND_NUMBERS.get(tag.value.lower(), -1))
            else:
                code = {"UNSET": 0, "OK": 1, "ERROR": 2}.get(tag.value.upper(), -1)
                add("status = ?" if wanted else "status <> ?", code)
        elif tag.op == "=" and tag.key not in SPECIAL_TAGS:
            needles = _needles(tag)
            tests = " OR ".join("contains(hex(body), ?) OR contains(hex(resource), ?)" for _ in needles)
            add(f"({tests})", *[n for needle in needles for n in (needle, needle)])

    def dependencies(self, start_us: int, end_us: int) -> list[Dependency]:
        """Edges parent service → child service with call and error counts."""
        rows = self._rows(
            """
            SELECT p.service, c.service, count(*), count(*) FILTER (WHERE c.status = ?)
            FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_id = p.span_id
            WHERE c.start_us BETWEEN ? AND ? AND p.service <> c.service
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            [STATUS_ERROR, start_us, end_us],
        )
        return [Dependency(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def red(
        self,
        services: Sequence[str],
        start_us: int,
        end_us: int,
        step_us: int,
        quantiles: Sequence[float],
        by_operation: bool,
        span_kinds: Sequence[int],
    ) -> list[RedPoint]:
        """Per-step figures; the timestamp of a step is its end."""
        if not services or not span_kinds:
            return []
        step_us = max(1, step_us)
        qs = list(quantiles)
        q_sql = "".join(f", quantile_cont(duration_us, {float(q)!r}) / 1000.0" for q in qs)
        op = "operation" if by_operation else "''"
        s_marks = ", ".join("?" for _ in services)
        k_marks = ", ".join("?" for _ in span_kinds)
        rows = self._rows(
            f"""
            SELECT service, {op} AS op, (start_us - ?) // ? AS step, count(*),
                   count(*) FILTER (WHERE status = ?) {q_sql}
            FROM spans
            WHERE service IN ({s_marks}) AND kind IN ({k_marks}) AND start_us >= ? AND start_us < ?
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """,
            [start_us, step_us, STATUS_ERROR, *services, *span_kinds, start_us, end_us],
        )
        return [
            RedPoint(
                service=r[0],
                operation=r[1],
                timestamp_us=start_us + (int(r[2]) + 1) * step_us,
                calls=int(r[3]),
                errors=int(r[4]),
                quantiles={q: float(v) for q, v in zip(qs, r[5:], strict=True)},
            )
            for r in rows
        ]

    def stats(self) -> dict[str, int]:
        """Spans stored and bytes used by the file."""
        cursor = self._cursor()
        return {"spans": self._count(cursor), "bytes": self._used_bytes(cursor)}

    def scan(self) -> Iterator[Span]:
        """Every stored span, oldest first (tests and exports)."""
        for row in self._rows(f"SELECT {ROW} FROM spans ORDER BY start_us"):
            yield span_from_row(*row)

    def close(self) -> None:
        """Checkpoint and close the database."""
        if self._closed:
            return
        self._closed = True
        with self._write_lock, contextlib.suppress(duckdb.Error):
            self._db.execute("CHECKPOINT").fetchall()
        self._db.close()
