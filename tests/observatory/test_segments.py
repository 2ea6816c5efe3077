"""Span bodies in segment files: where they go, what survives a crash, retention, and the earlier layout.

The earlier layout is made the way its code made it: its schema, rows inserted directly.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

from boutique.observatory.model import Span, SpanBatch
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store import migrate
from boutique.observatory.store.base import TagCondition, TraceQuery
from boutique.observatory.store.duckdb_store import DuckDBStore, Retention
from boutique.observatory.store.segments import Segments, segment_name
from tests.observatory.test_store import batch, now_us

# The spans table as the store created it before span bodies moved to segment files.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
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
    body BLOB NOT NULL USING COMPRESSION uncompressed,
    resource BLOB NOT NULL,
    scope BLOB NOT NULL,
    s0 UBIGINT NOT NULL USING COMPRESSION uncompressed,
    s1 UBIGINT NOT NULL USING COMPRESSION uncompressed,
    s2 UBIGINT NOT NULL USING COMPRESSION uncompressed,
    s3 UBIGINT NOT NULL USING COMPRESSION uncompressed
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id);
"""


def segments_of(store: DuckDBStore) -> dict[int, int]:
    return store.segments.sizes()


def trace_ids(*batches: SpanBatch) -> list[bytes]:
    """The distinct trace ids of the batches, in order."""
    return list(dict.fromkeys(b.trace_id_at(i) for b in batches for i in range(b.size)))


def traced_batch(traces: int, spans_per_trace: int, service: str, start_us: int) -> SpanBatch:
    """Traces of a root and children across two resources and scopes, with attributes and an event."""
    request = ExportTraceServiceRequest()
    for side in ("a", "b"):
        resource = request.resource_spans.add()
        resource.resource.attributes.add(key="service.name").value.string_value = f"{service}-{side}"
        resource.resource.attributes.add(key="service.instance.id").value.string_value = f"{side}-1"
        resource.scope_spans.add().scope.CopyFrom(InstrumentationScope(name=f"lib-{side}", version="1.0"))
    for number in range(traces):
        trace_id = os.urandom(16)
        root = os.urandom(8)
        for index in range(spans_per_trace):
            scope = request.resource_spans[index % 2].scope_spans[0]
            span = scope.spans.add(
                trace_id=trace_id,
                span_id=root if index == 0 else os.urandom(8),
                parent_span_id=b"" if index == 0 else root,
                name=f"op-{index}",
                kind=2 if index == 0 else 3,
                start_time_unix_nano=(start_us + number * 100 + index) * 1000,
                end_time_unix_nano=(start_us + number * 100 + index + 40) * 1000,
            )
            span.attributes.add(key="trace.number").value.int_value = number
            span.attributes.add(key="filler").value.string_value = "y" * 100
            span.events.add(name="step", time_unix_nano=(start_us + number * 100 + index + 1) * 1000)
    return decode(request.SerializeToString())


def test_bodies_go_to_segment_files_and_come_back_whole(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb")
    written = traced_batch(20, 5, "shop", now_us())
    store.append(written)
    columns = {row[1] for row in store._db.execute("PRAGMA table_info('spans')").fetchall()}
    assert not {"body", "resource", "scope"} & columns
    assert sum(segments_of(store).values()) == len(written.body)  # one append, one write, nothing else
    trace = store.traces([written.trace_id_at(0)])[0]
    assert [s.operation for s in trace] == [f"op-{i}" for i in range(5)]
    root = trace[0]
    assert root.parent_id == "" and trace[1].parent_id == root.span_id
    assert root.attributes == {"trace.number": 0, "filler": "y" * 100}
    assert root.resource == {"service.name": "shop-a", "service.instance.id": "a-1"}
    assert (root.service, root.instance) == ("shop-a", "a-1")
    assert (root.scope_name, root.scope_version) == ("lib-a", "1.0")
    assert trace[1].service == "shop-b" and trace[1].scope_name == "lib-b"
    assert [e.name for e in root.events] == ["step"] and not root.warnings
    # Resources and scopes are stored once each, however many spans and appends use them.
    store.append(traced_batch(20, 5, "shop", now_us()))
    assert store._db.execute("SELECT count(*) FROM resources").fetchall() == [(2,)]
    assert store._db.execute("SELECT count(*) FROM scopes").fetchall() == [(2,)]
    found = store.find_traces(TraceQuery(service="shop-b", tags=(TagCondition("trace.number", "=", "7"),)))
    assert len(found) == 2
    stats = store.stats()
    assert stats["spans"] == 200 and stats["bytes"] >= sum(segments_of(store).values())
    store.close()


def test_an_append_never_committed_is_cut_off_and_its_place_reused(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb")
    first = traced_batch(10, 4, "svc", now_us())
    store.append(first)
    store.close()
    # What a crash between the sync of the bodies and the commit of their rows leaves behind.
    segment = tmp_path / "o.duckdb.segments" / segment_name(1)
    committed = segment.stat().st_size
    with segment.open("ab") as out:
        out.write(b"\xff" * 5000)
    reopened = DuckDBStore(tmp_path / "o.duckdb")
    assert segment.stat().st_size == committed
    second = traced_batch(10, 4, "svc", now_us())
    reopened.append(second)
    assert segment.stat().st_size == committed + len(second.body)
    for written in (first, second):
        spans = reopened.traces(trace_ids(written))
        assert len(spans) == 10 and all(len(t) == 4 and not any(s.warnings for s in t) for t in spans)
    reopened.close()


def test_a_missing_or_short_segment_leaves_the_indexed_fields_and_a_warning(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb", Retention(max_bytes=16 << 20))  # 256 KiB segments
    batches = [traced_batch(400, 4, f"svc{n}", now_us()) for n in range(3)]
    for written in batches:
        store.append(written)
    assert sorted(segments_of(store)) == [1, 2, 3]
    (tmp_path / "o.duckdb.segments" / segment_name(1)).unlink()
    os.truncate(tmp_path / "o.duckdb.segments" / segment_name(2), 100)
    for written, problem in zip(batches, ("unreadable", "missing", None), strict=True):
        trace = store.traces([written.trace_id_at(0)])[0]
        assert [s.operation for s in trace] == ["op-0", "op-1", "op-2", "op-3"]
        assert trace[0].resource["service.name"] == trace[0].service and trace[0].scope_name == "lib-a"
        if problem:
            assert all(not s.attributes and problem in s.warnings[0] for s in trace), trace[0].warnings
        else:
            assert trace[0].attributes["filler"] == "y" * 100 and not trace[0].warnings
    assert len(store.search(TraceQuery(service="svc0-a", limit=500))) == 400  # searches still answer
    store.close()
    DuckDBStore(tmp_path / "o.duckdb").close()  # and the store opens again


def test_retention_removes_the_segments_no_row_points_into(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb", Retention(max_age_us=3600 * 1_000_000, max_bytes=16 << 20))
    now = now_us()
    old = traced_batch(400, 4, "old", now - 2 * 3600 * 1_000_000)
    store.append(old)
    store.append(traced_batch(400, 4, "new", now))
    assert sorted(segments_of(store)) == [1, 2]
    assert store.enforce_retention(now) == old.size
    assert sorted(segments_of(store)) == [2]
    assert store.services() == ["new-a", "new-b"]
    # Side-table rows of the dropped spans go too.
    assert store._db.execute("SELECT count(*) FROM resources").fetchall() == [(2,)]
    store.append(traced_batch(10, 4, "old", now))  # a resource seen before the cut is stored again
    assert sorted(store.services()) == ["new-a", "new-b", "old-a", "old-b"]
    trace = store.search(TraceQuery(service="old-a"))[0]
    assert trace[0].resource["service.name"] == "old-a"
    # The segment appends go to is never removed, even when no row points into it.
    assert store.enforce_retention(now + 10 * 3600 * 1_000_000) > 0
    assert store.stats()["spans"] == 0 and sorted(segments_of(store)) == [3]
    store.close()


def test_segments_resume_after_the_last_referenced_byte(tmp_path: Path) -> None:
    folder = tmp_path / "segments"
    segments = Segments(folder, rotate_bytes=100)
    assert segments.write(b"a" * 60) == (1, 0)
    segments.advance(60)
    assert segments.write(b"b" * 60) == (1, 60)
    segments.advance(60)
    assert segments.write(b"c" * 10) == (2, 0)  # past the rotation size: a new segment
    segments.advance(10)
    segments.close()
    # Rows point up to byte 60 of segment 1 only: segment 2 and the rest of segment 1 were never committed.
    resumed = Segments(folder, rotate_bytes=100)
    resumed.resume(1, 60, writable=True)
    assert (resumed.current, resumed.end) == (2, 0) and (folder / segment_name(2)).stat().st_size == 0
    bodies = resumed.read([(1, 0, 60), (1, 60, 60), (9, 0, 1)])
    assert [b.data for b in bodies] == [b"a" * 60, b"b" * 60, None]
    resumed.remove_unreferenced([1])
    assert resumed.numbers() == [1, 2]
    resumed.remove_unreferenced([])
    assert resumed.numbers() == [2]


# ---- the earlier layout ------------------------------------------------------------------------


def write_old_layout(path: Path, batches: list[SpanBatch]) -> None:
    """A database as the earlier code wrote it: its schema, one row per span with body, resource, scope."""
    db = duckdb.connect(str(path))
    db.execute(OLD_SCHEMA)
    rows = [
        (
            b.trace_id_at(i),
            b.span_id_at(i),
            b.parent_id_at(i),
            b.service_at(i),
            b.operation_at(i),
            int(b.kind[i]),
            int(b.start_us[i]),
            int(b.duration_us[i]),
            int(b.status[i]),
            b.instance_at(i),
            b.body_at(i),
            b.resource_at(i),
            b.scope_at(i),
            *(int(word) for word in b.signature[i]),
        )
        for b in batches
        for i in range(b.size)
    ]
    db.executemany(f"INSERT INTO spans VALUES ({', '.join('?' for _ in range(17))})", rows)
    db.close()


def every_trace(store: DuckDBStore, batches: list[SpanBatch]) -> list[list[Span]]:
    return store.traces(trace_ids(*batches))


def test_a_store_in_the_earlier_layout_is_migrated_when_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "CHUNK", 70)  # several chunks
    now = now_us()
    batches = [traced_batch(30, 5, "shop", now), batch(50, now, service="other")]
    write_old_layout(tmp_path / "old.duckdb", batches)
    fresh = DuckDBStore(tmp_path / "fresh.duckdb")  # the same spans appended by the current code
    for written in batches:
        fresh.append(written)
    with caplog.at_level(logging.WARNING, logger="boutique.observatory.store.duckdb_store"):
        store = DuckDBStore(tmp_path / "old.duckdb")
    lines = [r for r in caplog.records if r.getMessage() == "migrated spans to the current layout"]
    assert [r.spans for r in lines] == [200]  # type: ignore[attr-defined]
    listed = "SELECT database_name, table_name FROM duckdb_tables()"
    tables = store._db.execute(listed).fetchall()  # the migration file is no longer attached
    assert sorted(tables) == sorted(("old", name) for _, name in fresh._db.execute(listed).fetchall())
    assert {"resources", "scopes", "spans", "logs"} <= {name for _, name in tables}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fresh.duckdb",
        "fresh.duckdb.segments",
        "fresh.duckdb.wal",
        "old.duckdb",
        "old.duckdb.segments",
        "old.duckdb.wal",
    ]
    assert every_trace(store, batches) == every_trace(fresh, batches)
    assert store.services() == fresh.services()
    query = TraceQuery(service="shop-b", tags=(TagCondition("trace.number", "=", "3"),))
    assert store.find_traces(query) == fresh.find_traces(query) == [trace_ids(batches[0])[3]]
    store.append(traced_batch(5, 2, "after", now))  # and it takes spans as usual
    assert store.stats()["spans"] == 210
    store.close()
    fresh.close()


def test_a_migration_killed_midway_goes_on_at_the_next_open(tmp_path: Path) -> None:
    now = now_us()
    batches = [traced_batch(40, 5, "shop", now)]
    path = tmp_path / "old.duckdb"
    write_old_layout(path, batches)
    # A process that migrates in chunks of 30 rows and is killed (SIGKILL) right after the third commit.
    script = textwrap.dedent(
        f"""
        import os, signal
        from boutique.observatory.store import migrate
        from boutique.observatory.store.duckdb_store import DuckDBStore
        migrate.CHUNK = 30
        commits = []
        mark = migrate.mark
        def counted(high):
            commits.append(high)
            if len(commits) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return mark(high)
        migrate.mark = counted
        DuckDBStore({str(path)!r})
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    probe = duckdb.connect(str(tmp_path / "old.duckdb.migrating"), read_only=True)
    assert probe.execute("SELECT count(*) FROM spans").fetchall() == [(90,)]  # three chunks committed
    probe.close()
    probe = duckdb.connect(str(path), read_only=True)
    assert probe.execute("SELECT count(*) FROM spans").fetchall() == [(200,)]  # the earlier file untouched
    probe.close()
    store = DuckDBStore(path)
    assert store.stats()["spans"] == 200  # the rest, once: no chunk copied twice, none lost
    assert store._db.execute("SELECT count(DISTINCT span_id) FROM spans").fetchall() == [(200,)]
    traces = every_trace(store, batches)
    assert len(traces) == 40 and all(len(t) == 5 and not any(s.warnings for s in t) for t in traces)
    store.close()


def test_a_layout_it_cannot_read_is_set_aside_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.duckdb"
    db = duckdb.connect(str(path))
    db.execute("CREATE TABLE spans (trace_id BLOB, span_id BLOB, body BLOB)")  # no tag signatures
    db.execute("INSERT INTO spans VALUES ('\\x01', '\\x02', '\\x03')")
    db.close()
    with caplog.at_level(logging.ERROR, logger="boutique.observatory.store.duckdb_store"):
        store = DuckDBStore(path)
    [line] = [r for r in caplog.records if r.getMessage() == "set the store aside and started an empty one"]
    [aside] = line.moved_to  # type: ignore[attr-defined]
    assert Path(aside).exists() and Path(aside).name.startswith("o.duckdb.set-aside-")
    assert store.stats()["spans"] == 0
    store.append(batch(3, now_us()))
    assert store.stats()["spans"] == 3
    store.close()
    DuckDBStore(path).close()  # opens as it is from now on


def test_resources_are_found_again_once_their_cache_is_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from boutique.observatory.store import interned

    monkeypatch.setattr(interned, "CACHE_LIMIT", 3)  # cleared every few resources
    store = DuckDBStore(tmp_path / "o.duckdb")
    written = [traced_batch(2, 2, f"svc{n % 5}", now_us()) for n in range(12)]  # 10 resources, each 2.4 times
    for each in written:
        store.append(each)
    stored = store._db.execute("SELECT count(*), count(DISTINCT digest) FROM resources").fetchall()
    assert stored == [(10, 10)]
    for each in written:
        for trace in store.traces(trace_ids(each)):
            assert all(s.resource["service.name"] == s.service for s in trace)
    store.close()


def test_a_name_that_is_not_utf8_is_stored_repaired(tmp_path: Path) -> None:
    written = traced_batch(1, 2, "svc", now_us())
    written.operation = written.operation.replace(b"op-1", b"op\xff1")
    store = DuckDBStore(tmp_path / "o.duckdb")
    store.append(written)
    assert [s.operation for s in store.traces(trace_ids(written))[0]] == ["op-0", "op\ufffd1"]
    store.close()


def test_traces_sharing_the_first_half_of_their_id_are_told_apart(tmp_path: Path) -> None:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    prefix = os.urandom(8)
    shared = [prefix + os.urandom(8) for _ in range(6)]  # one index key for six traces
    apart = [os.urandom(16) for _ in range(12)]
    for trace_id in shared + apart:
        scope.spans.add(trace_id=trace_id, span_id=os.urandom(8), name="x", start_time_unix_nano=1000)
    store = DuckDBStore(tmp_path / "o.duckdb")
    store.append(decode(request.SerializeToString()))
    for wanted in (shared[:1], shared[2:4] + apart[:3], shared[4:] + apart):  # keys inline, then as a list
        found = store.traces(wanted)
        assert [bytes.fromhex(t[0].trace_id) for t in found] == wanted and all(len(t) == 1 for t in found)
    assert store.traces([prefix + bytes(8)]) == []
    store.close()


def test_service_and_instance_names_of_every_length_come_back(tmp_path: Path) -> None:
    names = ["", "a", "twelve-bytes", "thirteen-byte", "a-service-name-well-past-twelve-bytes", "サービス名"]
    request = ExportTraceServiceRequest()
    for name in names:
        resource = request.resource_spans.add()
        resource.resource.attributes.add(key="service.name").value.string_value = name
        resource.resource.attributes.add(key="service.instance.id").value.string_value = name[::-1] * 2
        resource.scope_spans.add().spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="x")
    written = decode(request.SerializeToString())
    store = DuckDBStore(tmp_path / "o.duckdb")
    store.append(SpanBatch.concat([written, written]))  # resources repeated, rows in any order
    found = {(s.service, s.instance) for trace in store.traces(trace_ids(written)) for s in trace}
    assert found == {(name or "unknown_service", name[::-1] * 2) for name in names}
    store.close()
