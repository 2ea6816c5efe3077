"""The span store's segment files under real faults: a full disk refusing the bodies, kill -9 mid-append.

Span bodies are written and synced to a segment file before their rows are committed; an append that
returned is acknowledged. Neither fault may lose an acknowledged span or leave a body unreadable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from boutique.observatory.model import SpanBatch
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.base import StoreReadOnly
from boutique.observatory.store.duckdb_store import DuckDBStore

BODY_PAD = 4096  # bytes of attribute per span: the bodies, not the log, fill the disk


def bulky_batch(traces: int, service: str = "bulky") -> SpanBatch:
    """`traces` traces of three spans, each span carrying BODY_PAD random bytes as an attribute."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = service
    scope = resource.scope_spans.add()
    now = time.time_ns()
    for _ in range(traces):
        trace_id = os.urandom(16)
        for index in range(3):
            span = scope.spans.add(
                trace_id=trace_id,
                span_id=os.urandom(8),
                name=f"step-{index}",
                start_time_unix_nano=now + index * 1000,
                end_time_unix_nano=now + index * 1000 + 5000,
            )
            span.attributes.add(key="pad").value.string_value = os.urandom(BODY_PAD // 2).hex()
    return decode(request.SerializeToString())


def all_stored(store: DuckDBStore, trace_ids: list[bytes]) -> None:
    """Every trace is there with its three spans, each body read back and decoded."""
    for start in range(0, len(trace_ids), 200):
        wanted = trace_ids[start : start + 200]
        found = store.traces(wanted)
        assert len(found) == len(wanted), f"{len(wanted) - len(found)} acknowledged traces missing"
        for trace in found:
            assert len(trace) == 3
            assert all(len(s.attributes["pad"]) == BODY_PAD and not s.warnings for s in trace)


def test_a_disk_too_full_for_the_bodies_turns_the_store_read_only_until_space_comes_back(
    small_disk: Path,
) -> None:
    data = small_disk / "data"
    store = DuckDBStore(data / "observatory.duckdb")
    acknowledged: list[bytes] = []
    try:
        stat = os.statvfs(small_disk)
        filler = small_disk / "filler"
        with filler.open("wb") as out:  # leave about 3 MiB: a few dozen batches of bodies
            os.posix_fallocate(out.fileno(), 0, stat.f_bavail * stat.f_frsize - (3 << 20))
        refused = None
        for _ in range(500):
            written = bulky_batch(20)
            try:
                store.append(written)
            except StoreReadOnly as exc:
                refused = exc
                break
            acknowledged += [written.trace_id_at(i * 3) for i in range(20)]
        assert refused is not None, "the disk never filled"
        state = store.write_state()
        print(f"refused after {len(acknowledged)} traces: {refused}; state {state.summary}: {state.error}")
        assert state.summary == "read-only: disk full"
        assert state.error.startswith("[Errno 28]"), state.error  # the segment write, not DuckDB, ran out
        # The rows were inserted while the bodies were being written: the failed write rolled them back.
        assert not store.traces([written.trace_id_at(i * 3) for i in range(20)])
        with pytest.raises(StoreReadOnly):
            store.append(bulky_batch(1))
        all_stored(store, acknowledged)  # queries answer from what is stored
        assert not store.recover().writable  # still full: recovery waits
        filler.unlink()
        assert store.recover().writable
        written = bulky_batch(20)
        store.append(written)
        acknowledged += [written.trace_id_at(i * 3) for i in range(20)]
        all_stored(store, acknowledged)
    finally:
        store.close()
    reopened = DuckDBStore(data / "observatory.duckdb")
    try:
        all_stored(reopened, acknowledged)
    finally:
        reopened.close()


# A writer that appends batches made beforehand as fast as it can (so a kill lands mostly inside an
# append) and prints each batch's trace ids once its append returned.
WRITER = textwrap.dedent(
    """
    import sys
    from tests.faults.test_store_segments import bulky_batch
    from boutique.observatory.store.duckdb_store import DuckDBStore
    batches = [bulky_batch(10) for _ in range(80)]
    store = DuckDBStore(sys.argv[1])
    print("ready", flush=True)
    for written in batches:
        store.append(written)
        print(" ".join(written.trace_id_at(i * 3).hex() for i in range(10)), flush=True)
    """
)


@pytest.mark.parametrize(("after", "delay"), [(5, 0.0), (23, 0.002), (41, 0.004), (61, 0.008)])
def test_kill_9_mid_append_loses_no_acknowledged_span(tmp_path: Path, after: int, delay: float) -> None:
    path = tmp_path / "observatory.duckdb"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    acknowledged: list[bytes] = []
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n"
        while len(acknowledged) < after * 10:
            line = writer.stdout.readline()
            assert line, f"the writer stopped: {writer.wait()}"
            acknowledged += [bytes.fromhex(t) for t in line.split()]
        time.sleep(delay)  # into the next append: its bodies, its insert or its commit
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    for line in writer.stdout:  # acknowledged just before the kill
        acknowledged += [bytes.fromhex(t) for t in line.split()]
    segments = sorted((tmp_path / "observatory.duckdb.segments").glob("*.seg"))
    written = sum(p.stat().st_size for p in segments)
    store = DuckDBStore(path)
    try:
        kept = sum(p.stat().st_size for p in segments)
        print(f"{len(acknowledged)} traces acknowledged; {written - kept} bytes never committed cut off")
        all_stored(store, acknowledged)
        assert store.stats()["spans"] >= 3 * len(acknowledged)
        store.append(bulky_batch(5))  # and it goes on
    finally:
        store.close()


def test_a_migration_the_disk_has_no_room_for_goes_on_once_space_comes_back(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from boutique.observatory.store import migrate
    from tests.observatory.test_segments import write_old_layout

    monkeypatch.setattr(migrate, "CHUNK", 60)
    data = small_disk / "data"
    data.mkdir()
    batches = [bulky_batch(100, service=f"earlier-{n}") for n in range(4)]  # 1200 spans, ~5 MiB of bodies
    write_old_layout(data / "observatory.duckdb", batches)
    ids = [b.trace_id_at(i * 3) for b in batches for i in range(100)]
    stat = os.statvfs(small_disk)
    filler = small_disk / "filler"
    with filler.open("wb") as out:  # room for part of the bodies only
        os.posix_fallocate(out.fileno(), 0, stat.f_bavail * stat.f_frsize - (2 << 20))
    store = DuckDBStore(data / "observatory.duckdb")
    try:
        state = store.write_state()
        copied = store.stats()["spans"]
        print(f"migration stopped at {copied} of 1200 spans: {state.summary}: {state.error}")
        assert state.summary == "read-only: disk full" and 0 < copied < 1200
        assert (data / "observatory.duckdb.migrating").exists()
        assert not store.recover().writable  # no room yet: still waiting
        filler.unlink()
        assert store.recover().writable
        assert store.stats()["spans"] == 1200 and not (data / "observatory.duckdb.migrating").exists()
        all_stored(store, ids)
    finally:
        store.close()
    reopened = DuckDBStore(data / "observatory.duckdb")
    try:
        all_stored(reopened, ids)
    finally:
        reopened.close()
