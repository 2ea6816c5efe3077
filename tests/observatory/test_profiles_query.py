"""Profile queries over a real DuckDB store: flame trees, granularity, span profiles, diff, top, traces, pprof.

Rows go in as `ProfileBatch`es appended to the store, spans as OTLP requests decoded the way the
receivers decode them; every figure checked is worked out by hand from the rows below.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from boutique.observatory.profiles import pprof_pb2 as pb
from boutique.observatory.profiles import query as q
from boutique.observatory.profiles.model import ProfileBatch, frame_label
from boutique.observatory.profiles.pprof_out import query_pprof
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.duckdb_store import DuckDBStore, Retention
from tests.observatory.profile_builders import BatchRow, profile_batch
from tests.observatory.test_api_jaeger import SERVER, S, request

S_US = 1_000_000
MAIN = "main (app/main.py:10)"
HANDLE_20 = "handle (app/web.py:20)"
HANDLE_25 = "handle (app/web.py:25)"
QUERY = "query (app/db.py:5)"
RENDER = "render (app/web.py:40)"
WALK = "walk (app/tree.py:3)"
TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN_A, SPAN_B, SPAN_C = "a100000000000001", "b200000000000002", "c300000000000003"


@dataclass
class Row:
    """A profile row to store (time in seconds after the fixture's `t0`)."""

    frames: Sequence[str]
    value: int
    at: int = 0
    type: str = "cpu"
    thread: str = "MainThread"
    trace: str = ""
    span: str = ""
    service: str = "web"
    instance: str = "web-1"
    unit: str = "nanoseconds"


def batch(rows: Sequence[Row], t0: int) -> ProfileBatch:
    """One batch of the rows, a resource per (service, instance)."""
    return profile_batch(
        BatchRow(
            row.frames,
            row.value,
            t0 + row.at * S_US,
            row.service,
            row.instance,
            type=row.type,
            unit=row.unit,
            thread=row.thread,
            trace_id=bytes.fromhex(row.trace),
            span_id=bytes.fromhex(row.span),
        )
        for row in rows
    )


@pytest.fixture
def t0() -> int:
    """Ten minutes ago, whole seconds (µs)."""
    return (time.time_ns() // 1000 // S_US - 600) * S_US


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "observatory.duckdb")
    yield opened
    opened.close()


def fill(store: DuckDBStore, t0: int) -> None:
    """The shared rows: web's cpu profile (85 ns in all), split over rows, spans, threads and times,
    and rows the filters must leave out."""
    rows = [
        Row([MAIN, HANDLE_20, QUERY], 20, at=1, trace=TRACE, span=SPAN_A),
        Row([MAIN, HANDLE_20, QUERY], 10, at=2, trace=TRACE, span=SPAN_B),
        Row([MAIN, HANDLE_25, QUERY], 20, at=3, trace=TRACE, span=SPAN_A),
        Row([MAIN, HANDLE_20], 10, at=4, thread="worker"),
        Row([MAIN, RENDER], 15, at=5, trace=TRACE, span=SPAN_C),
        Row([MAIN, RENDER], 10, at=6),
        # left out by the default filters: another type, service, and a row from two hours before
        Row([MAIN, HANDLE_20, QUERY], 1000, at=1, type="wall"),
        Row([MAIN, RENDER], 2000, at=1, service="shop", instance="shop-1"),
        Row([MAIN, RENDER], 4000, at=-7200),
    ]
    store.append(batch(rows, t0))


def tree(store: DuckDBStore, query: q.ProfileQuery) -> dict[str, Any]:
    root, _ = store.read(lambda cursor: q.flame_tree(cursor, query))
    decoded: dict[str, Any] = json.loads(q.tree_json(root))
    return decoded


def node(name: str, own: int, total: int, *children: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "self": own, "total": total, "children": list(children)}


def web(t0: int, **fields: Any) -> q.ProfileQuery:
    """Web's cpu samples over the hour up to now."""
    return q.ProfileQuery(service="web", start_us=t0 - 3000 * S_US, end_us=t0 + 600 * S_US, **fields)


# ---- trees -------------------------------------------------------------------------------------


def test_a_function_tree_merges_lines_and_counts_self_and_total(store: DuckDBStore, t0: int) -> None:
    fill(store, t0)
    assert tree(store, web(t0)) == node(
        "total",
        0,
        85,
        node(
            "main (app/main.py)",
            0,
            85,
            node("handle (app/web.py)", 10, 60, node("query (app/db.py)", 50, 50)),
            node("render (app/web.py)", 25, 25),
        ),
    )
    _, stacks = store.read(lambda cursor: q.flame_tree(cursor, web(t0)))
    assert (stacks.rows, stacks.unit) == (6, "nanoseconds")


def test_a_line_tree_keeps_lines_apart_sorted_by_total_then_name(store: DuckDBStore, t0: int) -> None:
    fill(store, t0)
    store.append(batch([Row([MAIN, "a (app/a.py:1)"], 20, at=7)], t0))  # ties with handle:25 by total
    assert tree(store, web(t0, granularity="line")) == node(
        "total",
        0,
        105,
        node(
            MAIN,
            0,
            105,
            node(HANDLE_20, 10, 40, node(QUERY, 30, 30)),
            node(RENDER, 25, 25),
            node("a (app/a.py:1)", 20, 20),
            node(HANDLE_25, 0, 20, node(QUERY, 20, 20)),
        ),
    )


def test_filters_pick_type_service_instance_thread_and_window(store: DuckDBStore, t0: int) -> None:
    fill(store, t0)
    store.append(batch([Row([MAIN], 7, at=1, instance="web-2")], t0))
    assert tree(store, web(t0, type="wall"))["total"] == 1000
    assert tree(store, replace(web(t0), service="shop"))["total"] == 2000
    assert tree(store, web(t0))["total"] == 92
    assert tree(store, web(t0, instance="web-2"))["total"] == 7
    assert tree(store, web(t0, thread="worker")) == node(
        "total", 0, 10, node("main (app/main.py)", 0, 10, node("handle (app/web.py)", 10, 10))
    )
    window = replace(web(t0), start_us=t0 + 2 * S_US, end_us=t0 + 5 * S_US)  # bounds included
    assert tree(store, window)["total"] == 10 + 20 + 10 + 15
    assert tree(store, replace(web(t0), start_us=t0 - 7300 * S_US))["total"] == 4092
    assert tree(store, web(t0, type="alloc_space")) == node("total", 0, 0)


def test_a_span_profile_holds_only_that_spans_rows(store: DuckDBStore, t0: int) -> None:
    fill(store, t0)
    trace, span = bytes.fromhex(TRACE), bytes.fromhex(SPAN_A)
    spans = [S(TRACE, SPAN_A, "", "GET /checkout", SERVER, t0 + S_US, 3 * S_US)]
    store.append(decode(request([({"service.name": "web"}, ("", ""), spans)]).SerializeToString()))
    wanted = q.ProfileQuery(trace_id=trace, span_id=span)
    query, start, end = store.read(lambda cursor: q.with_window(cursor, wanted, None, None, t0))
    assert (start, end) == (t0 + S_US, t0 + 4 * S_US)  # the span's own window
    assert tree(store, query) == node(
        "total",
        0,
        40,
        node(
            "main (app/main.py)", 0, 40, node("handle (app/web.py)", 0, 40, node("query (app/db.py)", 40, 40))
        ),
    )
    # a span not stored: the last hour up to now, and still only its rows
    other = replace(wanted, span_id=bytes.fromhex(SPAN_C))
    query, start, end = store.read(lambda cursor: q.with_window(cursor, other, None, None, t0 + 600 * S_US))
    assert (start, end) == (t0 - 3000 * S_US, t0 + 600 * S_US)
    assert tree(store, query)["children"][0]["children"] == [node("render (app/web.py)", 15, 15)]
    # the whole trace, and bounds given win over the span's window
    whole = replace(wanted, span_id=None)
    query, start, end = store.read(lambda cursor: q.with_window(cursor, whole, None, None, t0))
    assert (start, end, tree(store, query)["total"]) == (t0 + S_US, t0 + 4 * S_US, 65)
    query, _, _ = store.read(lambda cursor: q.with_window(cursor, wanted, t0 + 3 * S_US, t0 + 9 * S_US, t0))
    assert tree(store, query)["total"] == 20


def test_a_diff_carries_both_windows_values(store: DuckDBStore, t0: int) -> None:
    fill(store, t0)
    store.append(
        batch([Row([MAIN, HANDLE_20, QUERY], 5, at=-100), Row([MAIN, "gone (app/old.py:1)"], 8, at=-90)], t0)
    )
    now = replace(web(t0), start_us=t0, end_us=t0 + 60 * S_US)
    base = replace(web(t0), start_us=t0 - 120 * S_US, end_us=t0 - 60 * S_US)
    root, stacks, base_stacks = store.read(lambda cursor: q.diff_tree(cursor, now, base))
    assert (stacks.rows, base_stacks.rows) == (6, 2)

    def diff(
        name: str, own: int, total: int, base_own: int, base_total: int, *children: Any
    ) -> dict[str, Any]:
        return {
            "name": name,
            "self": own,
            "total": total,
            "baseSelf": base_own,
            "baseTotal": base_total,
            "children": list(children),
        }

    assert json.loads(q.tree_json(root, diff=True)) == diff(
        "total",
        0,
        85,
        0,
        13,
        diff(
            "main (app/main.py)",
            0,
            85,
            0,
            13,
            diff("handle (app/web.py)", 10, 60, 0, 5, diff("query (app/db.py)", 50, 50, 5, 5)),
            diff("render (app/web.py)", 25, 25, 0, 0),
            diff("gone (app/old.py)", 0, 0, 8, 8),
        ),
    )


# ---- top functions and traces ------------------------------------------------------------------


def test_top_functions_count_a_recursive_stack_once(store: DuckDBStore, t0: int) -> None:
    fill(store, t0)
    store.append(batch([Row([MAIN, WALK, WALK, "walk (app/tree.py:4)", WALK], 30, at=8)], t0))
    top = store.read(lambda cursor: q.top_functions(cursor, web(t0)))
    assert top == [
        {"name": "query (app/db.py)", "self": 50, "total": 50},
        {"name": "walk (app/tree.py)", "self": 30, "total": 30},
        {"name": "render (app/web.py)", "self": 25, "total": 25},
        {"name": "handle (app/web.py)", "self": 10, "total": 60},
        {"name": "main (app/main.py)", "self": 0, "total": 115},
    ]
    by_line = store.read(lambda cursor: q.top_functions(cursor, web(t0, granularity="line"), limit=2))
    assert by_line == [{"name": QUERY, "self": 50, "total": 50}, {"name": WALK, "self": 30, "total": 30}]


def test_traces_for_a_frame_most_first_with_stored_operations(store: DuckDBStore, t0: int) -> None:
    fill(store, t0)
    spans = [S(TRACE, SPAN_B, "", "GetCart", SERVER, t0 + 2 * S_US, S_US)]
    store.append(decode(request([({"service.name": "web"}, ("", ""), spans)]).SerializeToString()))
    found = store.read(lambda cursor: q.traces_for_frame(cursor, web(t0), "query (app/db.py)"))
    assert found == [
        {"traceID": TRACE, "spanID": SPAN_A, "service": "web", "operation": "", "value": 40, "start": ""},
        {"traceID": TRACE, "spanID": SPAN_B, "service": "web", "operation": "GetCart", "value": 10, "start": t0 + 2 * S_US},
    ]  # fmt: skip
    # a line label at function granularity matches its function; at line granularity only that line
    assert [t["value"] for t in store.read(lambda c: q.traces_for_frame(c, web(t0), HANDLE_25))] == [40, 10]
    by_line = store.read(lambda cursor: q.traces_for_frame(cursor, web(t0, granularity="line"), HANDLE_25))
    assert [(t["spanID"], t["value"]) for t in by_line] == [(SPAN_A, 20)]
    assert [t["spanID"] for t in store.read(lambda c: q.traces_for_frame(c, web(t0), MAIN, limit=2))] == [
        SPAN_A,
        SPAN_C,
    ]
    assert store.read(lambda cursor: q.traces_for_frame(cursor, web(t0), "nowhere (x.py)")) == []


def test_services_with_their_types_and_instances(store: DuckDBStore, t0: int) -> None:
    assert store.read(q.services) == []
    fill(store, t0)
    store.append(batch([Row([MAIN], 1, instance="web-2", type="alloc_space", unit="bytes")], t0))
    assert store.read(q.services) == [
        {"service": "shop", "types": ["cpu"], "instances": ["shop-1"]},
        {"service": "web", "types": ["alloc_space", "cpu", "wall"], "instances": ["web-1", "web-2"]},
    ]
    _, stacks = store.read(lambda cursor: q.flame_tree(cursor, web(t0, type="alloc_space")))
    assert (stacks.unit, stacks.rows) == ("bytes", 1)


def test_retention_drops_old_rows_and_the_stacks_no_row_names(tmp_path: Path, t0: int) -> None:
    store = DuckDBStore(tmp_path / "kept.duckdb", Retention(max_age_us=3600 * S_US))
    try:
        fill(store, t0)  # one row two hours old, its stack [MAIN, RENDER] shared with newer rows
        store.append(batch([Row([MAIN, "old (app/old.py:1)"], 9, at=-7300)], t0))
        counts = "SELECT (SELECT count(*) FROM profile_samples), (SELECT count(*) FROM profile_stacks)"
        assert store.read(lambda cursor: cursor.execute(counts).fetchall()) == [(10, 5)]
        store.enforce_retention(t0 + 60 * S_US)
        assert store.read(lambda cursor: cursor.execute(counts).fetchall()) == [(8, 4)]
        stored = store.read(lambda cursor: cursor.execute("SELECT frames FROM profile_stacks").fetchall())
        assert ["old (app/old.py:1)" not in frames for (frames,) in stored] == [True] * 4
        assert tree(store, replace(web(t0), start_us=0))["total"] == 85
    finally:
        store.close()


# ---- a large profile, and pprof -----------------------------------------------------------------


def large_batch(t0: int, rows: int = 100_000, stacks: int = 5000, seed: int = 18) -> ProfileBatch:
    """`rows` rows over `stacks` stacks 20 to 60 deep, each sharing a prefix with an earlier one."""
    rng = random.Random(seed)
    functions = [(f"mod{i % 40}.Thing.f{i}", f"app/mod{i % 40}.py") for i in range(600)]
    made: list[tuple[str, ...]] = []
    for _ in range(stacks):
        depth = rng.randint(20, 60)
        frames = list(rng.choice(made)[: rng.randint(1, 19)]) if made else [MAIN]
        while len(frames) < depth:
            name, file = rng.choice(functions)
            frames.append(frame_label(name, file, 10 + 7 * rng.randint(0, 3)))
        made.append(tuple(frames))
    return profile_batch(
        BatchRow(
            time_us=t0 + rng.randint(0, 300) * S_US,
            value=rng.randint(1, 4) * 10_000_000,
            frames=rng.choice(made),
            service="big",
            instance="big-1",
            thread=rng.choice(["MainThread", "worker-1"]),
            trace_id=rng.randbytes(16),
            span_id=rng.randbytes(8),
        )
        for _ in range(rows)
    )


def check_node(item: dict[str, Any]) -> int:
    """Check a node's total is its self plus its children's totals and their order; the nodes below it."""
    children = item["children"]
    assert item["total"] == item["self"] + sum(child["total"] for child in children)
    assert [(-c["total"], c["name"]) for c in children] == sorted((-c["total"], c["name"]) for c in children)
    return len(children) + sum(check_node(child) for child in children)


def test_a_large_profile_adds_up(store: DuckDBStore, t0: int) -> None:
    big = large_batch(t0)
    store.append(big)
    query = q.ProfileQuery(service="big", start_us=t0, end_us=t0 + 300 * S_US)
    for granularity in q.GRANULARITIES:
        each = replace(query, granularity=granularity)
        root, stacks = store.read(partial(q.flame_tree, query=each))
        decoded = json.loads(q.tree_json(root))
        assert decoded["total"] == sum(big.value) and stacks.rows == len(big)
        assert check_node(decoded) > len(set(big.stack_id))
    top = store.read(lambda cursor: q.top_functions(cursor, query, limit=q.MAX_TOP))
    assert sum(item["self"] for item in top) == sum(big.value)
    assert max(item["total"] for item in top) == sum(big.value)  # main, in every stack once


def pprof_stacks(data: bytes) -> tuple[Counter[tuple[str, ...]], pb.Profile]:
    """A pprof file's stacks (root first, as frame labels) with their summed values, and the profile."""
    profile = pb.Profile.FromString(gzip.decompress(data))
    strings = profile.string_table
    assert strings[0] == ""
    functions = {f.id: (strings[f.name], strings[f.filename]) for f in profile.function}
    locations = {}
    for location in profile.location:
        (line,) = location.line
        name, file = functions[line.function_id]
        locations[location.id] = frame_label(name, file, line.line) if file else name
    found: Counter[tuple[str, ...]] = Counter()
    for sample in profile.sample:
        (value,) = sample.value
        found[tuple(locations[i] for i in reversed(sample.location_id))] += value
    return found, profile


def test_pprof_decodes_to_the_same_stacks_and_totals(store: DuckDBStore, t0: int, tmp_path: Path) -> None:
    fill(store, t0)
    store.append(batch([Row(["<module> (<string>:1)", "odd frame"], 3, at=9)], t0))
    query = web(t0, granularity="line")
    data = store.read(lambda cursor: query_pprof(cursor, query, t0, t0 + 60 * S_US))
    found, profile = pprof_stacks(data)
    stacks = store.read(lambda cursor: q.stack_values(cursor, query))
    assert found == Counter({tuple(frames): value for frames, value in stacks})
    assert found[(MAIN, HANDLE_20, QUERY)] == 30 and found[("<module> (<string>:1)", "odd frame")] == 3
    strings = profile.string_table
    assert [(strings[t.type], strings[t.unit]) for t in profile.sample_type] == [("cpu", "nanoseconds")]
    assert (strings[profile.period_type.type], strings[profile.period_type.unit]) == ("cpu", "nanoseconds")
    assert (profile.time_nanos, profile.duration_nanos) == (t0 * 1000, 60 * S_US * 1000)
    threads = {strings[label.str] for sample in profile.sample for label in sample.label}
    assert threads == {"MainThread", "worker"}
    assert len(set(strings)) == len(strings)

    big = large_batch(t0, rows=20_000, stacks=1000)
    store.append(big)
    big_query = q.ProfileQuery(service="big", start_us=t0, end_us=t0 + 300 * S_US, granularity="line")
    found, _ = pprof_stacks(store.read(lambda cursor: query_pprof(cursor, big_query, t0, t0 + 300 * S_US)))
    assert sum(found.values()) == sum(big.value)
    assert found == Counter({tuple(f): v for f, v in store.read(lambda c: q.stack_values(c, big_query))})


def test_go_tool_pprof_reads_the_file(store: DuckDBStore, t0: int, tmp_path: Path) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("reading the file with `go tool pprof` needs Go installed (https://go.dev/dl/)")
    fill(store, t0)
    path = tmp_path / "web-cpu.pb.gz"
    path.write_bytes(store.read(lambda cursor: query_pprof(cursor, web(t0), t0, t0 + 60 * S_US)))
    shown = subprocess.run(
        [go, "tool", "pprof", "-top", str(path)], capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    assert "85ns, 100% of 85ns total" in shown.stdout
    flat = {
        line.split()[-1]: line.split()[0]
        for line in shown.stdout.splitlines()
        if line.endswith(("query", "render"))
    }
    assert flat == {"query": "50ns", "render": "25ns"}


def test_a_stack_as_deep_as_python_allows_still_encodes(store: DuckDBStore, t0: int) -> None:
    frames = [MAIN, *(f'deep{i} "ß" (app/deep.py:{i})' for i in range(1023))]
    store.append(batch([Row(frames, 5, at=1)], t0))
    root, _ = store.read(lambda cursor: q.flame_tree(cursor, web(t0, granularity="line")))
    text = q.tree_json(root)  # json.dumps of nested dicts would give up about 500 levels down
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # json.loads too, in this test only
    try:
        decoded = json.loads(text)
    finally:
        sys.setrecursionlimit(limit)
    names = []
    while decoded["children"]:
        (decoded,) = decoded["children"]
        assert decoded["total"] == 5
        names.append(decoded["name"])
    assert names == frames and decoded["self"] == 5


def test_prune_keeps_the_largest_frames_and_exact_totals() -> None:
    """A tree pruned to a few frames keeps the largest, folds each kept frame's small callees into one
    "(other)" callee, and every kept total is unchanged."""
    root = q.Node(q.ROOT)
    root.add(["main", "hot"], 1000)
    for index in range(50):
        root.add(["main", f"tiny{index}"], 1)
    root.add(["side"], 100)
    before = q.count_nodes(root) - 1
    dropped = q.prune(root, 3)
    main = root.children["main"]
    assert set(main.children) == {"hot", q.OTHER}
    assert main.children[q.OTHER].total == main.children[q.OTHER].self == 50
    assert main.total == 1050 and root.total == 1150
    assert q.count_nodes(root) - 1 == before - dropped
    assert q.prune(root, 0) == 0
