"""The trace page: the critical path, the tree order, and `/trace/{id}` over a real DuckDB store."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from boutique.observatory.model import Span
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.duckdb_store import DuckDBStore
from boutique.observatory.ui.critical_path import Segment, critical_path
from boutique.observatory.ui.trace import FIELDS, embed, page_data, tree_order
from tests.observatory.synthetic import SYNTHETIC_SERVICES, synthetic_trace
from tests.observatory.test_api_jaeger import TRACE_A, TRACE_B, build_store, client

# ---- the critical path ---------------------------------------------------------------------------


@dataclass(frozen=True)
class T:
    """A span as the critical path sees it."""

    span_id: str
    parent_id: str
    start_us: int
    end_us: int


def path(*spans: T) -> list[tuple[str, int, int]]:
    """The critical path as (span, start, end) triples, checked to cover the root's window gaplessly."""
    segments = critical_path(spans)
    for before, after in itertools.pairwise(segments):
        assert before.end_us == after.start_us, segments
    return [(s.span_id, s.start_us, s.end_us) for s in segments]


def test_sequential_children_and_the_parents_own_time() -> None:
    assert path(T("r", "", 0, 100), T("a", "r", 10, 40), T("b", "r", 50, 90)) == [
        ("r", 0, 10),
        ("a", 10, 40),
        ("r", 40, 50),
        ("b", 50, 90),
        ("r", 90, 100),
    ]


def test_parallel_children_only_the_last_to_finish_counts() -> None:
    spans = (T("r", "", 0, 100), T("a", "r", 10, 80), T("b", "r", 10, 60), T("c", "r", 20, 70))
    assert path(*spans) == [("r", 0, 10), ("a", 10, 80), ("r", 80, 100)]


def test_overlapping_children_the_earlier_one_fills_the_gap_before_the_later() -> None:
    spans = (T("r", "", 0, 100), T("a", "r", 10, 60), T("b", "r", 40, 90))
    assert path(*spans) == [("r", 0, 10), ("a", 10, 40), ("b", 40, 90), ("r", 90, 100)]


def test_a_child_outliving_its_parent_is_clamped_to_the_parent() -> None:
    spans = (T("r", "", 0, 100), T("s", "r", 10, 50), T("x", "s", 20, 80))  # x: async, or clock skew
    assert path(*spans) == [("r", 0, 10), ("s", 10, 20), ("x", 20, 50), ("r", 50, 100)]
    assert path(T("r", "", 0, 100), T("late", "r", 50, 150)) == [("r", 0, 50), ("late", 50, 100)]
    assert path(T("r", "", 100, 200), T("early", "r", 50, 150)) == [("early", 100, 150), ("r", 150, 200)]


def test_nested_calls_walk_down_and_back_up() -> None:
    spans = (
        T("root", "", 0, 100),
        T("client", "root", 10, 90),
        T("server", "client", 15, 85),
        T("db", "server", 20, 40),
        T("cache", "server", 50, 80),
    )
    assert path(*spans) == [
        ("root", 0, 10),
        ("client", 10, 15),
        ("server", 15, 20),
        ("db", 20, 40),
        ("server", 40, 50),
        ("cache", 50, 80),
        ("server", 80, 85),
        ("client", 85, 90),
        ("root", 90, 100),
    ]


def test_single_span() -> None:
    assert path(T("only", "", 5, 105)) == [("only", 5, 105)]
    assert path(T("instant", "", 5, 5)) == [("instant", 5, 5)]
    assert critical_path([]) == []


def test_several_roots_the_longest_is_measured() -> None:
    spans = (T("r1", "", 0, 50), T("r2", "missing", 10, 200), T("k", "r2", 20, 100), T("r3", "", 300, 310))
    assert path(*spans) == [("r2", 10, 20), ("k", 20, 100), ("r2", 100, 200)]


def test_repeated_ids_and_loops_are_not_followed() -> None:
    spans = (
        T("r", "", 0, 100),
        T("a", "r", 10, 50),
        T("a", "r", 0, 1000),  # a second copy: the first is kept
        T("b", "c", 0, 500),  # b and c are each other's parents: unreachable from r
        T("c", "b", 0, 500),
        T("self", "self", 0, 10),
    )
    assert path(*spans) == [("r", 0, 10), ("a", 10, 50), ("r", 50, 100)]
    loop = (T("x", "y", 0, 100), T("y", "x", 10, 20))  # nothing but a loop: the earliest span leads
    assert path(*loop) == [("x", 0, 10), ("y", 10, 20), ("x", 20, 100)]


def test_a_very_deep_trace_needs_no_recursion() -> None:
    depth = 5000
    chain = [T(f"s{i}", f"s{i - 1}" if i else "", i, 2 * depth - i) for i in range(depth)]
    segments = critical_path(chain)
    assert segments[0] == Segment("s0", 0, 1) and segments[-1] == Segment("s0", 2 * depth - 1, 2 * depth)
    assert sum(s.end_us - s.start_us for s in segments) == 2 * depth


# ---- tree order ----------------------------------------------------------------------------------


def span(span_id: str, parent: str, start: int, duration: int = 10, service: str = "svc") -> Span:
    """A decoded span with only what the tree needs."""
    return Span("t" * 32, span_id, parent, service, f"op-{span_id}", 1, start, duration, 0)


def test_tree_order_is_depth_first_with_children_by_start() -> None:
    spans = [
        span("r", "", 0, 100),
        span("b", "r", 50),
        span("a", "r", 10),
        span("a1", "a", 11),
        span("o", "gone", 5),
    ]
    tree = tree_order(spans)
    assert [s.span_id for s in tree.spans] == ["r", "a", "a1", "b", "o"]
    assert tree.parents == [-1, 0, 1, 0, -1]
    assert tree.depths == [0, 1, 2, 1, 0]
    assert "not in this trace" in tree.warnings["o"][0]


def test_tree_order_survives_repeats_and_loops() -> None:
    spans = [span("r", "", 0, 100), span("r", "", 1), span("x", "y", 3), span("y", "x", 4), span("s", "s", 9)]
    tree = tree_order(spans)
    assert [s.span_id for s in tree.spans] == ["r", "s", "x", "y"]
    assert tree.parents == [-1, -1, -1, 2]
    assert "more than once" in tree.warnings["r"][0]
    assert "its own parent" in tree.warnings["s"][0]
    assert "loops" in tree.warnings["x"][0] and "y" not in tree.warnings


def test_page_data_counts_and_flags() -> None:
    spans = [span("r", "", 0, 100, "web"), span("a", "r", 10, 30, "db"), span("b", "r", 20, 70, "web")]
    spans.append(span("b1", "b", 30, 5, "cache"))
    data = page_data(spans)
    rows = [dict(zip(FIELDS, row, strict=True)) for row in data["spans"]]
    assert [r["id"] for r in rows] == ["r", "a", "b", "b1"]
    assert [r["children"] for r in rows] == [2, 0, 1, 0]
    assert [r["descendants"] for r in rows] == [3, 0, 1, 0]
    assert [data["services"][r["service"]] for r in rows] == ["web", "db", "web", "cache"]
    assert [r["critical"] for r in rows] == [1, 1, 1, 1]  # a runs until b starts, then b (b1 inside it)
    assert data["critical"][0] == [0, 0, 10]
    assert data["duration"] == 100 and data["root"] == 0


def test_embedded_json_cannot_close_its_script_block() -> None:
    text = str(embed({"evil": "</script><script>alert(1)</script>", "amp": "a&b"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"evil": "</script><script>alert(1)</script>", "amp": "a&b"}


# ---- the page ------------------------------------------------------------------------------------


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, DuckDBStore]]:
    """An HTTP client on the UI routes of a store holding the shared data set."""
    store = build_store(tmp_path)
    try:
        async with client(store) as http:
            yield http, store
    finally:
        store.close()


def embedded(html: str) -> dict[str, Any]:
    """The page's JSON data block, parsed strictly (no NaN or Infinity)."""
    found = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', html, re.S)
    assert found, "no data block"

    def refuse(constant: str) -> None:
        """Fail on a constant strict JSON does not have."""
        raise AssertionError(f"{constant} in the page data")

    return dict(json.loads(found.group(1), parse_constant=refuse))


def rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The span rows as dicts by field name."""
    return [dict(zip(data["fields"], row, strict=True)) for row in data["spans"]]


async def test_trace_page_embeds_the_trace(ui: tuple[httpx.AsyncClient, DuckDBStore]) -> None:
    http, _ = ui
    response = await http.get(f"/trace/{TRACE_A}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "frontend: GET /checkout" in html and TRACE_A in html
    assert f'href="/api/traces/{TRACE_A}" download=' in html
    assert '<script src="/static/trace.js"></script>' in html
    data = embedded(html)
    assert data["traceId"] == TRACE_A and data["duration"] == 50_000
    assert data["services"] == ["frontend", "checkout", "payment", "currency"]
    rows = rows_of(data)
    assert len(rows) == 8
    assert [r["depth"] for r in rows[:3]] == [0, 1, 2]
    by_operation = {r["operation"]: r for r in rows}
    root = by_operation["GET /checkout"]
    assert root["attributes"]["raw"] == "AAH/" and root["events"] == [[1000, "cache.miss", {"key": "cart-1"}]]
    assert data["resources"][root["resource"]]["host.name"] == "box"
    assert data["instances"][root["instance"]] == "frontend-1"
    charge = by_operation["Charge"]
    assert charge["status"] == 2 and charge["message"] == "card declined"
    assert by_operation["prepare order"]["attributes"]["score"] == "inf"
    assert charge["critical"] == 1 and by_operation["currency/Convert"]["critical"] == 1
    assert {r["operation"] for r in rows if r["critical"]} >= {"GET /checkout", "PlaceOrder", "Charge"}


async def test_links_and_short_ids(ui: tuple[httpx.AsyncClient, DuckDBStore]) -> None:
    http, _ = ui
    rows = rows_of(embedded((await http.get(f"/trace/{TRACE_B}")).text))
    (linked,) = [r for r in rows if r["links"]]
    assert linked["links"] == [[TRACE_A, "a100000000000001", {}]]
    assert (await http.get("/trace/1234567890abcdef")).status_code == 200  # trace D, as Jaeger prints it


async def test_unknown_and_malformed_ids(ui: tuple[httpx.AsyncClient, DuckDBStore]) -> None:
    http, _ = ui
    missing = await http.get("/trace/" + "f" * 32)
    assert missing.status_code == 404
    assert "No trace with id" in missing.text and "trace-data" not in missing.text
    for bad in ("not-a-trace", "g" * 32, "1" * 33):
        response = await http.get(f"/trace/{bad}")
        assert response.status_code == 400, bad
        assert "Not a trace id" in response.text and "Traceback" not in response.text


async def test_ten_thousand_spans(tmp_path: Path) -> None:
    trace_id = "7e57" * 8
    store = DuckDBStore(tmp_path / "big.duckdb")
    try:
        store.append(decode(synthetic_trace(trace_id, 10_000, 1_700_000_000_000_000).SerializeToString()))
        async with client(store) as http:
            response = await http.get(f"/trace/{trace_id}")
    finally:
        store.close()
    assert response.status_code == 200
    data = embedded(response.text)
    rows = rows_of(data)
    assert len(rows) == 10_000 and len(data["services"]) == len(SYNTHETIC_SERVICES)
    assert max(r["depth"] for r in rows) >= 5
    assert rows[0]["descendants"] == 9_999
    assert sum(r["critical"] for r in rows) >= 5
    assert len(response.content) < 300 * 10_000  # compact: a few hundred bytes a span
