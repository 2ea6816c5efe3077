"""The DuckDB span store: one row per span in one file, span bodies in segment files beside it.

Ingest writes from one thread through one connection, a batch at a time: its span bodies go to the
current segment file with one write and a sync (`segments`) while its rows — ids, indexed fields, tag
signature, where the body lies, and the ids of its resource and scope, stored once each in side tables
(`interned`) — are inserted as one Arrow array (`arrow`); the rows are committed once the bodies are
on disk. An append returns only after both, so nothing acknowledged is lost to a crash. Queries run on cursors of their own (DuckDB's
MVCC lets them read while the writer appends). A search runs in two steps: SQL over the narrow
columns (service, operation, kind, times, status and the 256-bit tag signature, see `tagsig`) finds
candidate spans newest first without reading a span body; then the candidates' traces are fetched
through the index and every tag condition is checked exactly on the decoded spans, so each operator
works on the verbatim bodies the store keeps.

When the disk fills, the store turns read-only instead of failing for good: a write the storage
refuses marks it so (`write_state`), and when DuckDB has invalidated the database (a failed checkpoint
does that) every connection is closed and the file reopened, read-write if it can be, else read-only,
so queries go on answering from what is stored. `recover` probes until writes work again.

A file in the earlier layout (bodies, resources and scopes in columns of `spans`) is migrated when
opened (`migrate`); one that cannot be migrated is moved aside, never left to fail every start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import nanoarrow as na

from boutique.observatory import tagsig
from boutique.observatory.decode import span_from_row
from boutique.observatory.model import KIND_NUMBERS, STATUS_ERROR, Span, SpanBatch
from boutique.observatory.signals import Batch
from boutique.observatory.store import migrate
from boutique.observatory.store.arrow import SIGNATURE_COLUMNS, insert_spans, span_rows
from boutique.observatory.store.base import (
    Dependency,
    RedPoint,
    StoreBroken,
    StoreReadOnly,
    TagCondition,
    TraceQuery,
    WriteState,
)
from boutique.observatory.store.disk import (
    failure_reason,
    free_bytes,
    is_invalidated,
    is_write_failure,
    probe_write,
)
from boutique.observatory.store.gate import Gate
from boutique.observatory.store.interned import Interned
from boutique.observatory.store.segments import Body, Segments, sync_directory
from boutique.observatory.store.signal_tables import TABLES

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_key UBIGINT NOT NULL USING COMPRESSION uncompressed,
    trace_id BLOB NOT NULL USING COMPRESSION uncompressed,
    span_id BLOB NOT NULL USING COMPRESSION uncompressed,
    parent_id BLOB NOT NULL USING COMPRESSION uncompressed,
    service VARCHAR NOT NULL,
    operation VARCHAR NOT NULL,
    kind UTINYINT NOT NULL,
    start_us BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    status UTINYINT NOT NULL,
    instance VARCHAR NOT NULL,
    resource_id UINTEGER NOT NULL,
    scope_id UINTEGER NOT NULL,
    segment UINTEGER NOT NULL,
    body_offset BIGINT NOT NULL,
    body_length UINTEGER NOT NULL,
    s0 UBIGINT NOT NULL USING COMPRESSION uncompressed,
    s1 UBIGINT NOT NULL USING COMPRESSION uncompressed,
    s2 UBIGINT NOT NULL USING COMPRESSION uncompressed,
    s3 UBIGINT NOT NULL USING COMPRESSION uncompressed
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_key);
"""
# Ids, their keys and signatures are random: compressing them costs checkpoint time and saves nothing.
# Span bodies live in segment files: inside the table they cost every insert a copy and every checkpoint
# a rewrite. The trace index is on `trace_key` (see `arrow.trace_keys`), not on the id itself.

# What a trace fetch reads of each span: the row without its signature, then the body it points at.
ROW = (
    "trace_id, span_id, parent_id, service, operation, kind, start_us, duration_us, status, instance, "
    "segment, body_offset, body_length, resource_id, scope_id"
)
# The store's own file's sizes (while migrating, the earlier file is attached beside it).
DATABASE_SIZE = "pragma_database_size() WHERE database_name = current_database()"
CANDIDATE_PAGE = 2000  # candidate spans (narrow columns) read per step of a search
FIRST_WINDOW_US = 15 * 60 * 1_000_000  # the newest start-time window a search looks at first
SPECIAL_TAGS = ("error", "span.kind", "otel.status_code")
# Free space wanted beyond the write-ahead log before a read-only store tries a checkpoint again: a
# checkpoint that runs out of space invalidates the database, and each reopen replays the whole log.
CHECKPOINT_HEADROOM = 4 << 20
# Failed recoveries that a full disk does not explain before the store gives up (the process exits).
UNEXPLAINED_FAILURES = 10


def _by_trace_key(trace_ids: Sequence[bytes]) -> tuple[str, list[Any]]:
    """The condition (and its parameters) that finds the rows of these traces through the index.

    Only a condition on `trace_key` alone lets DuckDB use the index: the whole id is checked on the rows.
    A few keys go into the SQL as numbers, more as one list (quicker to bind).
    """
    keys = sorted({int.from_bytes(bytes(t)[:8], "big") for t in trace_ids})  # as `arrow.trace_keys`
    if len(keys) <= 8:
        return f"trace_key IN ({', '.join(map(str, keys))})", []
    return "trace_key = ANY(?::UBIGINT[])", [keys]


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


def segment_bytes(max_bytes: int) -> int:
    """Size at which a segment file is rotated: a sixty-fourth of the size limit, 256 KiB to 64 MiB, so
    retention frees space in steps small against the limit."""
    return min(64 << 20, max(256 << 10, max_bytes // 64))


class DuckDBStore:
    """Spans in a DuckDB file and span bodies in segment files beside it (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        retention: Retention | None = None,
        memory_limit: str = "128MB",
        threads: int = 2,
        checkpoint_threshold: str = "256MB",
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention or Retention()
        self.memory_limit = memory_limit
        # Checkpoints are few and large (retention forces one every time it runs): each rewrites row
        # groups, so small ones cost ingest more than the write-ahead log they save.
        self._config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": memory_limit,
            "threads": threads,
            "checkpoint_threshold": checkpoint_threshold,
        }
        self._write_lock = threading.Lock()  # the writer connection, the write state, reopening
        self._gate = Gate()  # queries on cursors versus closing them all
        self._local = threading.local()  # this thread's cursor and the generation it belongs to
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._generation = 0  # bumped at every reopen: cursors of an older one are closed
        self._state = WriteState()
        self._read_only = False
        self._broken: str | None = None
        self._unexplained = 0
        self._closed = False
        self.segments = Segments(self._beside(".segments"), segment_bytes(self.retention.max_bytes))
        self._tables = {table.batch_type: table for table in TABLES}
        self._syncer = futures.ThreadPoolExecutor(1, thread_name_prefix="segment-sync")  # see `_store`
        self._resources = Interned("resources", ("service", "instance"))
        self._scopes = Interned("scopes")
        self._migrating = False  # the earlier layout is being copied into a new file
        self._db_path = self.path  # the file the connections are on: the new one while migrating
        self._db = self._open_first()
        if self._migrating and self._state.writable:
            with self._write_lock:
                self._migrate_or_set_aside()
        self._span_range: tuple[int, int] | None = None  # oldest and newest start stored (for windows)
        self._refresh_span_range()

    def _beside(self, suffix: str) -> Path:
        """A path next to the database file: its name plus `suffix`."""
        return self.path.with_name(self.path.name + suffix)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A connection to the store's file (while migrating, the new file with the earlier one attached)."""
        db = duckdb.connect(str(self._db_path), read_only=read_only, config=self._config)
        if self._migrating:
            try:
                migrate.attach(db, str(self.path))
            except duckdb.Error:
                db.close()
                raise
        return db

    def _open_first(self) -> duckdb.DuckDBPyConnection:
        """Open read-write (creating the file, or starting or resuming a migration of the earlier layout);
        an existing file the storage will not let us write is opened read-only."""
        try:
            db = self._connect(read_only=False)
        except duckdb.Error as exc:
            if not self.path.exists() or not is_write_failure(exc):
                raise
            try:
                db = self._connect(read_only=True)
            except duckdb.Error:
                raise exc from None
            self._read_only = True
            self._mark_read_only(exc)
            if migrate.layout(db) != "current":
                db.close()
                raise ValueError(
                    f"{self.path} holds spans in an earlier layout, to be migrated when opened, but the file "
                    f"system refuses writes: {exc}"
                ) from None
            self._load(db, writable=False)
            return db
        try:
            layout = migrate.layout(db)
            if layout == "unknown":
                db = self._set_aside(db, "it holds spans in a layout this version cannot read")
            elif layout == "old":
                db = self._open_migration(db)
            else:
                self._remove_stale_migration()
            db.execute(self._schema()).fetchall()
            if self._migrating:
                migrate.start(db)
            self._load(db, writable=True)
        except duckdb.Error:
            db.close()
            raise
        return db

    def _migrating_file(self, suffix: str = "") -> Path:
        """The new file an earlier layout is migrated into (or its log)."""
        return self._beside(".migrating" + suffix)

    def _open_migration(self, earlier: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """Fold the earlier file's log into it and close it; a connection to the new file, it attached."""
        earlier.execute("CHECKPOINT").fetchall()  # from now on the earlier file alone holds its spans
        earlier.close()
        self._migrating, self._db_path = True, self._migrating_file()
        return self._connect(read_only=False)

    def _remove_stale_migration(self) -> None:
        """A new file left beside one in the current layout is no migration's any more: remove it."""
        for path in (self._migrating_file(), self._migrating_file(".wal")):
            if path.exists():
                log.warning("removed a migration's leftover file", extra={"file": str(path)})
                path.unlink()

    def _schema(self) -> str:
        tables = "".join(table.schema() for table in TABLES)
        return SCHEMA + self._resources.schema() + self._scopes.schema() + tables

    def _load(self, db: duckdb.DuckDBPyConnection, writable: bool) -> None:
        """Read the side tables' ids and where the next body goes (after the last one a row points at)."""
        self._resources.load(db)
        self._scopes.load(db)
        newest = self._one(db, "SELECT max(segment) FROM spans")
        segment = None if not newest or newest[0] is None else int(newest[0])
        end = 0
        if segment is not None:
            row = self._one(
                db, "SELECT max(body_offset + body_length) FROM spans WHERE segment = ?", [segment]
            )
            end = int(row[0]) if row and row[0] is not None else 0
        self.segments.resume(segment, end, writable)

    def _set_aside(self, db: duckdb.DuckDBPyConnection, why: str) -> duckdb.DuckDBPyConnection:
        """Move the database (its log, segments and any migration file too) aside under a dated name; a new
        empty one, open."""
        db.close()
        self.segments.close()
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = []
        for suffix in ("", ".wal", ".segments", ".migrating", ".migrating.wal"):
            source = self._beside(suffix)
            if source.exists():
                target = source.with_name(f"{self.path.name}.set-aside-{stamp}{suffix}")
                source.rename(target)
                moved.append(str(target))
        log.error(
            "set the store aside and started an empty one",
            extra={"file": str(self.path), "moved_to": moved, "reason": why},
        )
        self._migrating, self._db_path = False, self.path
        db = self._connect(read_only=False)
        db.execute(self._schema()).fetchall()
        return db

    def _migrate_or_set_aside(self) -> None:
        """Copy the earlier layout's rows over; a full disk leaves the store read-only (serving what is
        copied) until recovery goes on with it, any other failure sets the files aside. Called with the
        write lock held."""
        try:
            self._migrate()
        except Exception as exc:
            refused = isinstance(exc, OSError) or (isinstance(exc, duckdb.Error) and is_write_failure(exc))
            if self._migrating and refused and isinstance(exc, OSError | duckdb.Error):
                self._write_failed(exc)
                log.error(
                    "migrating spans to the current layout stopped: the storage refuses writes; it goes on "
                    "when the store takes writes again",
                    extra={"error": str(exc)},
                )
                return
            log.exception("migrating spans to the current layout failed")
            with self._gate.exclusive():
                self._close_connections()
                self._db = self._set_aside(self._db, f"migrating it to the current layout failed: {exc}")
                self._generation += 1
            self._load(self._db, writable=True)

    def _migrate(self) -> None:
        """Copy the rows of the earlier layout over in chunks, then put the new file in the earlier one's
        place (called with the write lock held)."""
        db = self._db
        began = time.monotonic()
        copied = 0
        if not migrate.copied_all(db):
            done = migrate.progress(db)
            log.warning(
                "migrating spans to the current layout", extra={"file": str(self.path), "spans": done.left}
            )
            for batch, high in migrate.chunks(db, done.next_row):
                if batch.size:
                    self._store(batch, migrate.mark(high))
                else:
                    db.execute(*migrate.mark(high)).fetchall()
                copied += batch.size
                if copied % 1_000_000 < batch.size:
                    log.warning("migrating spans to the current layout", extra={"spans": done.left - copied})
        migrate.finish(db)
        db.execute("CHECKPOINT").fetchall()
        with self._gate.exclusive():
            self._close_connections()
            # The earlier file's log was folded into it before the copy began: nothing of it is lost.
            self._beside(".wal").unlink(missing_ok=True)
            os.replace(self._migrating_file(), self.path)
            if self._migrating_file(".wal").exists():
                os.replace(self._migrating_file(".wal"), self._beside(".wal"))
            sync_directory(self.path.parent)
            self._migrating, self._db_path = False, self.path
            self._db = self._connect(read_only=False)
            self._generation += 1
        migrate.forget(self._db)
        with contextlib.suppress(OSError):  # DuckDB's spill directory of the new file, empty by now
            self._migrating_file(".tmp").rmdir()
        log.warning(
            "migrated spans to the current layout",
            extra={"file": str(self.path), "spans": copied, "seconds": round(time.monotonic() - began, 1)},
        )

    # ---- write state -------------------------------------------------------------------------

    def write_state(self) -> WriteState:
        """Whether appends can succeed now (no I/O)."""
        return self._state

    def _mark_read_only(self, exc: BaseException) -> None:
        """Record the first write failure (reason, DuckDB's words, time); later ones keep it."""
        if not self._state.writable:
            return
        text = str(exc)
        self._state = replace(
            self._state, writable=False, reason=failure_reason(text), error=text, since=time.time()
        )
        log.error("the store takes no writes now", extra={"reason": self._state.reason, "error": text})

    def _write_failed(self, exc: duckdb.Error | OSError) -> StoreReadOnly:
        """Turn read-only after a refused write, reopening an invalidated database; the error to raise.

        Called with the write lock held.
        """
        self._mark_read_only(exc)
        if is_invalidated(exc):
            self._reopen()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreReadOnly(f"the store is {self._state.summary}: {first_line}")

    def _reopen(self) -> None:
        """Close every connection and open the file again: read-write if it can be, else read-only.

        Raises `StoreBroken` when it cannot be opened at all. Called with the write lock held.
        """
        with self._gate.exclusive():
            self._close_connections()
            try:
                self._db, self._read_only = self._connect(read_only=False), False
            except duckdb.Error as exc:
                try:
                    self._db, self._read_only = self._connect(read_only=True), True
                except duckdb.Error as again:
                    self._broken = f"cannot reopen {self.path}: {exc}; nor read-only: {again}"
                    raise StoreBroken(self._broken) from again
            self._generation += 1
            self._state = replace(self._state, reopens=self._state.reopens + 1)
        log.warning(
            "reopened the store", extra={"read_only": self._read_only, "reopens": self._state.reopens}
        )

    def _close_connections(self) -> None:
        """Close the writer connection and every query cursor (called inside the exclusive gate)."""
        for cursor in self._cursors:
            with contextlib.suppress(duckdb.Error):
                cursor.close()
        self._cursors.clear()
        with contextlib.suppress(duckdb.Error):
            self._db.close()

    def recover(self) -> WriteState:
        """While read-only: if the file system takes writes and has room, checkpoint; writable on success.

        A checkpoint folds the write-ahead log into the file, which is what a full disk stopped, so one
        that succeeds proves the store writable again. Raises `StoreBroken` when the file cannot be
        reopened, or when recovery keeps failing for a reason other than a full disk.
        """
        with self._write_lock:
            if self._broken:
                raise StoreBroken(self._broken)
            if self._state.writable:
                return self._state
            if not self._room_to_checkpoint():
                return self._state
            self._state = replace(self._state, waiting="")
            try:
                if self._read_only:
                    self._reopen()
                if self._read_only:
                    self._unexplained += 1
                else:
                    self._db.execute("CHECKPOINT").fetchall()
            except duckdb.Error as exc:
                self._write_failed(exc)
                if failure_reason(str(exc)) != "disk full":
                    self._unexplained += 1
                self._give_up_after_unexplained(exc)
                return self._state
            if self._read_only:
                self._give_up_after_unexplained(None)
                return self._state
            took = time.time() - (self._state.since or time.time())
            self._state = WriteState(reopens=self._state.reopens)
            self._unexplained = 0
            log.warning("the store takes writes again", extra={"read_only_seconds": round(took, 1)})
            if self._migrating:
                self._migrate_or_set_aside()
            return self._state

    def _give_up_after_unexplained(self, exc: BaseException | None) -> None:
        if self._unexplained >= UNEXPLAINED_FAILURES:
            self._broken = (
                f"{self.path} stays unwritable with room on the disk: {exc or 'opens read-only only'}"
            )
            raise StoreBroken(self._broken)

    def _room_to_checkpoint(self) -> bool:
        """Whether a small file can be written and the disk has room for the write-ahead log to move."""
        try:
            probe_write(self.path.parent)
        except OSError as exc:
            self._state = replace(self._state, waiting=f"the data directory refuses writes: {exc.strerror}")
            return False
        try:
            row = self._one(self._db, f"SELECT free_blocks * block_size FROM {DATABASE_SIZE}")
            reusable = int(row[0]) if row and row[0] is not None else 0
        except duckdb.Error:
            reusable = 0
        needed = max(0, self._wal_bytes() - reusable) + CHECKPOINT_HEADROOM
        free = free_bytes(self.path.parent)
        if free >= needed:
            return True
        self._state = replace(
            self._state,
            waiting=f"needs {needed / 2**20:.1f} MiB free to checkpoint, has {free / 2**20:.1f} MiB",
        )
        return False

    def _wal_bytes(self) -> int:
        wal = self._db_path.with_name(self._db_path.name + ".wal")
        try:
            return wal.stat().st_size
        except FileNotFoundError:
            return 0

    # ---- writing -----------------------------------------------------------------------------

    def append(self, batch: Batch) -> None:
        """Store a batch durably: spans with their bodies in segments, other signals in their tables."""
        if not isinstance(batch, SpanBatch):
            self._append_signal(batch)
            return
        if not batch.size:
            return
        if batch.signature.shape != (batch.size, tagsig.WORDS):
            raise ValueError(f"{batch.size} spans but tag signatures of shape {batch.signature.shape}")
        with self._write_lock:
            if not self._state.writable:
                raise StoreReadOnly(f"the store is {self._state.summary}")
            try:
                self._store(batch)
            except OSError as exc:  # the segment file refused the bodies
                raise self._write_failed(exc) from exc
            except duckdb.Error as exc:
                if is_write_failure(exc):
                    raise self._write_failed(exc) from exc
                if isinstance(exc, duckdb.OutOfMemoryException):
                    raise MemoryError(
                        f"the store needs more than its memory limit of {self.memory_limit} (its trace-id "
                        "index takes about 50 MB per million traces): raise --memory-limit or lower --max-size"
                    ) from exc
                raise
            low, high = int(batch.start_us.min()), int(batch.start_us.max())
            if self._span_range is not None:
                low, high = min(low, self._span_range[0]), max(high, self._span_range[1])
            self._span_range = (low, high)

    def _append_signal(self, batch: Batch) -> None:
        """Insert and commit a log or metric batch through its table, with the spans' failure handling."""
        table = self._tables.get(type(batch))
        if table is None:
            raise TypeError(f"no table stores {type(batch).__name__}")
        if not len(batch):
            return
        with self._write_lock:
            if not self._state.writable:
                raise StoreReadOnly(f"the store is {self._state.summary}")
            db = self._db
            try:
                db.begin()
                try:
                    table.insert(db, batch)
                    db.commit()
                except BaseException:
                    with contextlib.suppress(duckdb.Error):
                        db.rollback()
                    raise
            except duckdb.Error as exc:
                if is_write_failure(exc):
                    raise self._write_failed(exc) from exc
                raise

    def read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work` with a read cursor of this thread's (queries of the other signals' modules)."""
        return self._read(work)

    def _store(self, batch: SpanBatch, extra: tuple[str, list[Any]] | None = None) -> None:
        """Write the bodies to the current segment and sync them while the rows are inserted, then commit
        the rows, with `extra` (one more statement) in the same commit. Called with the write lock held.

        The sync runs on its own thread beside the insert (both release the GIL): the commit waits for it,
        so no committed row ever points at bytes that are not on disk.
        """
        db = self._db
        resource_ids, new_resources = self._resources.ids(
            db, batch.resources, list(zip(batch.services, batch.instances, strict=True))
        )
        scope_ids, new_scopes = self._scopes.ids(db, batch.scopes)
        segment, start = self.segments.place()
        incoming_spans = span_rows(batch, resource_ids, scope_ids, start)
        try:
            synced = self._syncer.submit(self.segments.write, batch.body)
            try:
                self._insert(incoming_spans, insert_spans(segment), new_resources, new_scopes, extra, synced)
            finally:
                futures.wait([synced])  # never leave a write running past this append
        finally:
            # Once rows pointing at the bodies may have been committed, their bytes are never reused.
            self.segments.advance(len(batch.body))
        self._resources.committed(new_resources)
        self._scopes.committed(new_scopes)

    def _insert(
        self,
        incoming_spans: na.Array,
        insert: str,
        new_resources: list[tuple[Any, ...]],
        new_scopes: list[tuple[Any, ...]],
        extra: tuple[str, list[Any]] | None,
        synced: futures.Future[tuple[int, int]],
    ) -> None:
        """The span insert in one transaction with the new side-table rows and `extra`, committed once
        `synced` (the bodies' write) succeeded; its `OSError` rolls the rows back and is raised."""
        db = self._db
        db.begin()
        try:
            self._resources.insert(db, new_resources)
            self._scopes.insert(db, new_scopes)
            # DuckDB finds `incoming_spans` among the caller's variables (a replacement scan): cheaper per
            # batch than registering and unregistering a view of it.
            db.execute(insert).fetchall()
            if extra is not None:
                db.execute(*extra).fetchall()
            synced.result()
            db.commit()
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                db.rollback()
            raise

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file now (benchmarks count what it costs)."""
        with self._write_lock:
            if not self._state.writable:
                raise StoreReadOnly(f"the store is {self._state.summary}")
            try:
                self._db.execute("CHECKPOINT").fetchall()
            except duckdb.Error as exc:
                if is_write_failure(exc):
                    raise self._write_failed(exc) from exc
                raise

    def _refresh_span_range(self) -> None:
        """Read the oldest and newest stored start (after opening, after retention)."""
        row = self._one(self._db, "SELECT min(start_us), max(start_us) FROM spans")
        self._span_range = (int(row[0]), int(row[1])) if row and row[0] is not None else None

    def enforce_retention(self, now_us: int | None = None) -> int:
        """Drop spans past the age limit, then the oldest received until the used size is under the limit.

        The size counts the database file, its write-ahead log and the segment files, read after a
        checkpoint. The size cut drops whole segments, oldest first, with their rows: space comes back
        a segment file at a time, and rows deleted in the order they were inserted empty whole row
        groups, the unit in which DuckDB frees space. It is repeated (at most three times) while it still
        shrinks the store.
        """
        with self._write_lock:
            if not self._state.writable:
                return 0  # deleting needs the log and the checkpoint needs room: wait for recovery
            try:
                return self._enforce_retention(int(time.time() * 1_000_000) if now_us is None else now_us)
            except duckdb.Error as exc:
                if is_write_failure(exc):
                    raise self._write_failed(exc) from exc
                raise

    def _enforce_retention(self, now_us: int) -> int:
        """The cut itself (called with the write lock held)."""
        limit = self.retention.max_bytes
        db = self._db
        before = self._count(db)
        cutoff = now_us - self.retention.max_age_us
        db.execute("DELETE FROM spans WHERE start_us < ?", [cutoff]).fetchall()
        for table in TABLES:
            table.delete_before(db, cutoff)
        db.execute("CHECKPOINT").fetchall()
        self._remove_unreferenced_segments(db)
        used = self._used_bytes(db)
        for _ in range(3):
            if used <= limit:
                break
            cut = self._size_cut(db, used, limit)
            if cut is None:
                if not self._cut_signals(db):
                    break
            else:
                db.execute("DELETE FROM spans WHERE segment <= ?", [cut]).fetchall()
                self._cut_signals(db, self._one(db, "SELECT min(start_us) FROM spans"))
            db.execute("CHECKPOINT").fetchall()
            self._remove_unreferenced_segments(db)
            shrunk, used = used, self._used_bytes(db)
            if used >= shrunk:
                break
        dropped = before - self._count(db)
        if dropped:
            self._resources.prune(db, "resource_id")
            self._scopes.prune(db, "scope_id")
            self._refresh_span_range()
        return dropped

    def _cut_signals(self, db: duckdb.DuckDBPyConnection, oldest_span: tuple[Any, ...] | None = None) -> int:
        """The size cut's share of the other signals: what is older than the oldest span left, or (no
        span left) the older half of their time range; rows deleted."""
        if oldest_span is not None and oldest_span[0] is not None:
            cutoff = int(oldest_span[0])
        else:
            ranges = [r for r in (table.time_range(db) for table in TABLES) if r is not None]
            if not ranges:
                return 0
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
            cutoff = low + max(1, (high - low) // 2)
        return sum(table.delete_before(db, cutoff) for table in TABLES)

    def _size_cut(self, db: duckdb.DuckDBPyConnection, used: int, limit: int) -> int | None:
        """The newest segment whose rows go, with every older one's, to bring the store a tenth under the
        limit; each segment frees its file and its rows' share of the database."""
        counts = db.execute(
            "SELECT segment, count(*) FROM spans GROUP BY segment ORDER BY segment"
        ).fetchall()
        if not counts:
            return None
        sizes = self.segments.sizes()
        per_row = max(0, used - sum(sizes.values())) / sum(int(count) for _, count in counts)
        wanted = used - limit * 0.9  # aim below the limit so the next check does not cut again at once
        freed = 0.0
        for segment, count in counts:
            freed += sizes.get(int(segment), 0) + int(count) * per_row
            if freed >= wanted:
                return int(segment)
        return int(counts[-1][0])

    def _remove_unreferenced_segments(self, db: duckdb.DuckDBPyConnection) -> None:
        """Delete the segment files no stored row points into any more (never the one appended to)."""
        referenced = [int(row[0]) for row in db.execute("SELECT DISTINCT segment FROM spans").fetchall()]
        self.segments.remove_unreferenced(referenced)

    @staticmethod
    def _one(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, with the result consumed (DuckDB wants that before the next statement)."""
        rows = con.execute(sql, list(params)).fetchall()
        return rows[0] if rows else None

    def _count(self, con: duckdb.DuckDBPyConnection) -> int:
        row = self._one(con, "SELECT count(*) FROM spans")
        return int(row[0]) if row else 0

    def _used_bytes(self, con: duckdb.DuckDBPyConnection) -> int:
        """Blocks in use by the database, its write-ahead log not yet checkpointed, and the segment files."""
        row = self._one(con, f"SELECT used_blocks * block_size FROM {DATABASE_SIZE}")
        return (int(row[0]) if row else 0) + self._wal_bytes() + self.segments.total_bytes()

    # ---- reading -----------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of this thread's own (DuckDB connections are not shared across threads), on the
        database as last opened (called inside the shared gate)."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.cursor, local.generation = self._db.cursor(), self._generation
            self._cursors.append(local.cursor)
        cursor: duckdb.DuckDBPyConnection = local.cursor
        return cursor

    def _read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run a query on this thread's cursor; once more after a reopen if DuckDB invalidated the database."""
        with self._gate.shared():
            generation = self._generation
            try:
                return work(self._cursor())
            except duckdb.Error as exc:
                if not is_invalidated(exc):
                    raise
                failure = exc
        with self._write_lock:
            if self._generation == generation and not self._broken:
                self._write_failed(failure)
        with self._gate.shared():
            return work(self._cursor())

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._read(lambda cursor: cursor.execute(sql, list(params)).fetchall())

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
        wanted = {bytes(t) for t in trace_ids}
        condition, keys = _by_trace_key(trace_ids)
        sql = f"SELECT {ROW} FROM spans WHERE {condition} ORDER BY start_us, span_id"

        def fetch(
            cursor: duckdb.DuckDBPyConnection,
        ) -> tuple[list[Any], list[Body], dict[int, bytes], dict[int, bytes]]:
            seen: set[tuple[bytes, bytes]] = set()
            rows = []
            for row in cursor.execute(sql, keys).fetchall():
                key = (bytes(row[0]), bytes(row[1]))
                if key[0] in wanted and key not in seen:  # a span sent twice (a retry) is shown once
                    seen.add(key)
                    rows.append(row)
            bodies = self.segments.read([(int(r[10]), int(r[11]), int(r[12])) for r in rows])
            resources = self._resources.bodies(cursor, {int(r[13]) for r in rows})
            scopes = self._scopes.bodies(cursor, {int(r[14]) for r in rows})
            return rows, bodies, resources, scopes

        rows, bodies, resources, scopes = self._read(fetch)
        grouped: dict[bytes, list[Span]] = {bytes(t): [] for t in trace_ids}
        for row, body in zip(rows, bodies, strict=True):
            trace_id, span_id, parent_id, service, operation, kind, start, duration, status, instance = row[
                :10
            ]
            span = span_from_row(
                bytes(trace_id),
                bytes(span_id),
                bytes(parent_id),
                service,
                operation,
                kind,
                start,
                duration,
                status,
                instance,
                body.data,
                resources[int(row[13])],
                scopes[int(row[14])],
                body.problem,
            )
            grouped[bytes(trace_id)].append(span)
        return [spans for spans in grouped.values() if spans]

    def find_traces(self, query: TraceQuery) -> list[bytes]:
        """Ids of matching traces, newest first (or by their longest matching span)."""
        return [bytes.fromhex(trace[0].trace_id) for trace in self.search(query)]

    def search(self, query: TraceQuery) -> list[list[Span]]:
        """The matching traces themselves, in `find_traces` order (what the query APIs return).

        Newest-first searches go through start-time windows, the newest 15 minutes first and each next
        window four times wider, and stop once `limit` traces are found: zone maps on start time let
        each window read only its own row groups, so a search with recent hits never scans the day.
        """
        where, params = self._conditions(query)
        checks = [t for t in query.tags if not _decided_in_sql(t)]
        found: dict[bytes, list[Span]] = {}
        fetched: dict[bytes, dict[str, Span]] = {}
        windows = self._windows(query) if query.order == "start" else [(None, None)]
        for low, high in windows:
            window_where, window_params = list(where), list(params)
            if low is not None:
                window_where.append("start_us >= ?")
                window_params.append(low)
            if high is not None:
                window_where.append("start_us < ?")
                window_params.append(high)
            if checks:
                self._search_candidates(window_where, window_params, checks, query, found, fetched)
            else:
                self._search_in_sql(window_where, window_params, query, found)
            if len(found) >= query.limit:
                break
        return list(found.values())[: query.limit]

    def _windows(self, query: TraceQuery) -> list[tuple[int | None, int | None]]:
        """[low, high) start-time windows, newest first; None leaves a side open."""
        span_range = self._span_range
        if span_range is None:
            return [(None, None)]
        oldest, newest = span_range
        high = (query.end_us if query.end_us is not None else newest) + 1
        floor = max(query.start_us, oldest) if query.start_us is not None else oldest
        windows: list[tuple[int | None, int | None]] = []
        width = FIRST_WINDOW_US
        while True:
            low = high - width
            upper = high if windows else None  # the first window is open upwards: spans keep arriving
            if low <= floor:
                windows.append((None, upper))
                return windows
            windows.append((low, upper))
            high, width = low, width * 4

    def _search_in_sql(
        self, where: list[str], params: list[Any], query: TraceQuery, found: dict[bytes, list[Span]]
    ) -> None:
        """Add the window's best traces when SQL decides every condition."""
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        key = "max(duration_us)" if query.order == "duration" else "max(start_us)"
        sql = f"SELECT trace_id, {key} AS k FROM spans {clause} GROUP BY trace_id ORDER BY k DESC LIMIT ?"
        rows = self._rows(sql, [*params, query.limit + len(found)])
        fresh = [bytes(r[0]) for r in rows if bytes(r[0]) not in found][: query.limit - len(found)]
        by_id = {bytes.fromhex(t[0].trace_id): t for t in self.traces(fresh)}
        for trace_id in fresh:
            if trace_id in by_id:
                found[trace_id] = by_id[trace_id]

    def _search_candidates(
        self,
        where: list[str],
        params: list[Any],
        checks: list[TagCondition],
        query: TraceQuery,
        found: dict[bytes, list[Span]],
        fetched: dict[bytes, dict[str, Span]],
    ) -> None:
        """Add the window's traces whose candidate span passes the checks SQL cannot decide.

        Candidates come newest (or longest) first, a page at a time; each page starts after the last
        row seen (keyset paging), so spans arriving meanwhile neither shift nor repeat the pages.
        """
        column = "duration_us" if query.order == "duration" else "start_us"
        after: tuple[int, bytes] | None = None
        while len(found) < query.limit:
            page_where, page_params = list(where), list(params)
            if after is not None:
                page_where.append(f"({column} < ? OR ({column} = ? AND span_id > ?))")
                page_params += [after[0], after[0], after[1]]
            clause = f"WHERE {' AND '.join(page_where)}" if page_where else ""
            sql = f"SELECT trace_id, span_id, {column} FROM spans {clause} ORDER BY {column} DESC, span_id LIMIT ?"
            rows = self._rows(sql, [*page_params, CANDIDATE_PAGE])
            self._check_candidates(rows, checks, query.limit, found, fetched)
            if len(rows) < CANDIDATE_PAGE:
                return
            after = (int(rows[-1][2]), bytes(rows[-1][1]))

    def _check_candidates(
        self,
        rows: list[tuple[Any, ...]],
        checks: list[TagCondition],
        limit: int,
        found: dict[bytes, list[Span]],
        fetched: dict[bytes, dict[str, Span]],
    ) -> None:
        """Fetch the candidates' traces a few at a time and keep those whose candidate span passes."""
        pending = [(bytes(r[0]), bytes(r[1]).hex()) for r in rows if bytes(r[0]) not in found]
        start = 0
        while start < len(pending) and len(found) < limit:
            # The signature leaves few false candidates: fetch about as many traces as still wanted.
            step = limit - len(found) + 2
            chunk = pending[start : start + step]
            start += step
            missing = list(dict.fromkeys(t for t, _ in chunk if t not in fetched))
            for trace in self.traces(missing):
                fetched[bytes.fromhex(trace[0].trace_id)] = {s.span_id: s for s in trace}
            for trace_id, span_id in chunk:
                spans = fetched.get(trace_id, {})
                span = spans.get(span_id)
                if trace_id in found or span is None or not all(c.matches(span) for c in checks):
                    continue
                found[trace_id] = sorted(spans.values(), key=lambda s: (s.start_us, s.span_id))
                if len(found) >= limit:
                    return

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
        """Push a tag condition into SQL: exactly for the synthesized tags, as a signature test for `=`."""
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
            tests, values = [], []
            for mask in tagsig.needle_masks(tag.key, tag.value):
                parts = [
                    f"({column} & ?) = ?"
                    for column, word in zip(SIGNATURE_COLUMNS, mask, strict=True)
                    if word
                ]
                tests.append(f"({' AND '.join(parts)})")
                values += [v for word in mask if word for v in (word, word)]
            add(f"({' OR '.join(tests)})", *values)

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
        return self._read(lambda cursor: {"spans": self._count(cursor), "bytes": self._used_bytes(cursor)})

    def sample_trace_ids(self, count: int) -> list[bytes]:
        """Ids of up to `count` stored traces picked at random (benchmarks, spot checks)."""
        rows = self._rows(f"SELECT trace_id FROM spans USING SAMPLE reservoir({max(0, int(count))} ROWS)")
        return [bytes(r[0]) for r in rows]

    def close(self) -> None:
        """Checkpoint (unless read-only: a failed checkpoint would only invalidate it) and close the database."""
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            if self._state.writable and not self._read_only:
                with contextlib.suppress(duckdb.Error):
                    self._db.execute("CHECKPOINT").fetchall()
            with self._gate.exclusive():
                self._close_connections()
            self.segments.close()
        self._syncer.shutdown()
