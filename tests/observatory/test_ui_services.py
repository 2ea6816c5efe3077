"""The Services pages of the UI: the layered graph layout, service colours, and the pages over a real store."""

from __future__ import annotations

import itertools
import random
import re
import time
from pathlib import Path

import httpx
import pytest

from boutique.observatory.store.base import Dependency
from boutique.observatory.store.duckdb_store import DuckDBStore
from boutique.observatory.ui.charts import nice_step, time_ticks, value_ticks
from boutique.observatory.ui.graph_layout import (
    GraphLayout,
    assign_layers,
    break_cycles,
    chain_links,
    crossings,
    group_layers,
    layered_layout,
    order_layers,
    pack,
    smooth_path,
    split_long_edges,
)
from boutique.observatory.ui.pages import PALETTE, colour_index, service_colour
from boutique.observatory.ui.services import (
    Window,
    dependency_graph,
    kinds_to_chart,
    percent_text,
    red_charts,
)
from tests.observatory.test_api_jaeger import T0, TRACE_A, TRACE_C, client

UI_JS = Path(__file__).resolve().parents[2] / "src/boutique/observatory/ui/static/ui.js"
SHOP_EDGES = [
    *(
        ("frontend", c)
        for c in ("productcatalog", "currency", "cart", "recommendation", "shipping", "checkout", "ad")
    ),
    *(("checkout", c) for c in ("productcatalog", "cart", "currency", "shipping", "payment", "email")),
    ("recommendation", "productcatalog"),
    ("loadgen", "frontend"),
]


def lay_out(edges: list[tuple[str, str]], label: float = 0.0) -> GraphLayout:
    """A layout of the nodes named in the edges, boxes 80 by 30 and labels `label` wide."""
    names = sorted({n for e in edges for n in e})
    return layered_layout(names, edges, {n: (80.0, 30.0) for n in names}, [(label, 14.0)] * len(edges))


def assert_no_overlap(boxes: list[tuple[float, float, float]]) -> None:
    """(column x, centre y, height) boxes: none of one column overlaps another."""
    columns: dict[float, list[tuple[float, float]]] = {}
    for x, y, height in boxes:
        columns.setdefault(round(x, 3), []).append((y - height / 2, y + height / 2))
    for spans in columns.values():
        spans.sort()
        for (_, bottom), (top, _) in itertools.pairwise(spans):
            assert top >= bottom - 1e-6, spans


# ---- graph layout ------------------------------------------------------------------------------


def test_chain_takes_one_layer_per_node() -> None:
    layout = lay_out([("a", "b"), ("b", "c")])
    assert [layout.nodes[n].layer for n in "abc"] == [0, 1, 2]
    assert layout.nodes["a"].x < layout.nodes["b"].x < layout.nodes["c"].x
    assert layout.nodes["a"].y == pytest.approx(layout.nodes["b"].y) == pytest.approx(layout.nodes["c"].y)
    first = layout.edges[0]
    assert (first.source, first.target, first.reversed) == ("a", "b", False)
    assert first.points[0] == (layout.nodes["a"].x + 40, layout.nodes["a"].y)  # leaves a's right side
    assert first.points[-1] == (layout.nodes["b"].x - 40, layout.nodes["b"].y)  # enters b's left side


def test_diamond() -> None:
    assert assign_layers(4, [(0, 1), (0, 2), (1, 3), (2, 3)]) == [0, 1, 1, 2]
    layout = lay_out([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert [layout.nodes[n].layer for n in "abcd"] == [0, 1, 1, 2]
    assert layout.nodes["b"].x == layout.nodes["c"].x
    assert abs(layout.nodes["b"].y - layout.nodes["c"].y) >= 30
    # a and d sit between b and c.
    low, high = sorted([layout.nodes["b"].y, layout.nodes["c"].y])
    assert low < layout.nodes["a"].y < high and low < layout.nodes["d"].y < high


def test_longest_path_decides_the_layer() -> None:
    # a→d directly and a→b→c→d: d goes after c.
    assert assign_layers(4, [(0, 3), (0, 1), (1, 2), (2, 3)]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="cycle"):
        assign_layers(2, [(0, 1), (1, 0)])


def test_cycle_is_broken_by_reversing_a_back_edge() -> None:
    edges = [(0, 1), (1, 2), (2, 0)]
    assert break_cycles(3, edges) == {2}
    # Starting from the source: with x→a, the edge back into a is the one reversed, whatever the order.
    assert break_cycles(4, [(1, 2), (2, 0), (0, 1), (3, 0)]) == {1}
    layout = lay_out([("a", "b"), ("b", "c"), ("c", "a")])
    assert [e.reversed for e in layout.edges] == [False, False, True]
    assert [layout.nodes[n].layer for n in "abc"] == [0, 1, 2]
    back = layout.edges[2]
    # Drawn from c to a: it starts on c's right side and ends on a's right side, arrow pointing left.
    assert back.points[0] == pytest.approx((layout.nodes["c"].x - 40, layout.nodes["c"].y))
    assert back.points[-1] == pytest.approx((layout.nodes["a"].x + 40, layout.nodes["a"].y))
    assert back.points[-1][0] < back.points[-2][0]


def test_two_way_calls_and_self_loops() -> None:
    layout = lay_out([("a", "b"), ("b", "a"), ("a", "a")])
    assert [e.index for e in layout.edges] == [0, 1]  # the self-loop is not drawn
    assert [e.reversed for e in layout.edges] == [False, True]
    assert layout.edges[0].label != layout.edges[1].label  # each has its own label slot


def test_long_edge_gets_virtual_nodes() -> None:
    layer, chains = split_long_edges([0, 1, 2], [(0, 1), (1, 2), (0, 2)])
    assert chains[:2] == [[0, 1], [1, 2]]
    assert chains[2] == [0, 3, 2] and layer == [0, 1, 2, 1]
    layer, chains = split_long_edges([0, 3], [(0, 1)])
    assert layer == [0, 3, 1, 2] and chains == [[0, 2, 3, 1]]
    with pytest.raises(ValueError):
        split_long_edges([1, 0], [(0, 1)])
    # In a drawing, the long edge bends round the middle node instead of crossing it.
    layout = lay_out([("a", "b"), ("b", "c"), ("a", "c")])
    long_edge = layout.edges[2]
    assert len(long_edge.points) > len(layout.edges[0].points)
    b = layout.nodes["b"]
    passing = [y for x, y in long_edge.points if abs(x - b.x) < 1]
    assert passing and all(abs(y - b.y) >= b.height / 2 for y in passing)


def test_barycenter_removes_a_crossing() -> None:
    layers = [[0, 1], [2, 3]]
    links = [(0, 3), (1, 2)]
    assert crossings(layers, links) == 1
    ordered = order_layers(layers, links)
    assert crossings(ordered, links) == 0
    assert sorted(ordered[0]) == [0, 1] and sorted(ordered[1]) == [2, 3]


def test_crossings_never_worse_than_the_input_order() -> None:
    chooser = random.Random(7)
    for _ in range(40):
        count = chooser.randint(4, 14)
        layer = [chooser.randint(0, 3) for _ in range(count)]
        edges = [
            (u, v)
            for u in range(count)
            for v in range(count)
            if layer[v] > layer[u] and chooser.random() < 0.3
        ]
        full, chains = split_long_edges(layer, edges)
        layers, links = group_layers(full), chain_links(chains)
        ordered = order_layers(layers, links)
        assert crossings(ordered, links) <= crossings(layers, links)
        assert [sorted(m) for m in ordered] == [sorted(m) for m in layers]


def test_crossing_count() -> None:
    # Links from one node never cross each other; a full bipartite K2,2 crosses once.
    assert crossings([[0], [1, 2, 3]], [(0, 1), (0, 2), (0, 3)]) == 0
    assert crossings([[0, 1], [2, 3]], [(0, 2), (0, 3), (1, 2), (1, 3)]) == 1
    assert crossings([[0, 1, 2], [3, 4, 5]], [(0, 5), (1, 4), (2, 3)]) == 3


def test_nodes_and_labels_never_overlap() -> None:
    layout = lay_out(SHOP_EDGES, label=120.0)
    assert_no_overlap([(b.x, b.y, b.height) for b in layout.nodes.values()])
    assert_no_overlap([(e.label[0], e.label[1], 14.0) for e in layout.edges])
    assert {(e.source, e.target) for e in layout.edges} == set(SHOP_EDGES)
    assert layout.nodes["loadgen"].layer == 0 and layout.nodes["frontend"].layer == 1
    assert layout.nodes["checkout"].layer == 2 and layout.nodes["payment"].layer == 3
    for box in layout.nodes.values():  # everything on the canvas
        assert box.x - box.width / 2 >= 0 and box.x + box.width / 2 <= layout.width
        assert box.y - box.height / 2 >= 0 and box.y + box.height / 2 <= layout.height
    # Labels sit in their own columns, between the node columns.
    node_columns = {round(b.x, 3) for b in layout.nodes.values()}
    assert not node_columns & {round(e.label[0], 3) for e in layout.edges}


def test_empty_graph_and_bad_input() -> None:
    layout = layered_layout([], [], {})
    assert layout.nodes == {} and layout.edges == [] and layout.width > 0
    with pytest.raises(ValueError):
        layered_layout(["a", "a"], [], {"a": (1.0, 1.0)})


def test_pack_keeps_order_and_spacing() -> None:
    assert pack([0.0, 0.0, 0.0], [10.0, 10.0]) == pytest.approx([-10.0, 0.0, 10.0])
    assert pack([0.0, 100.0], [10.0]) == pytest.approx([0.0, 100.0])
    assert pack([5.0, 0.0], [10.0]) == pytest.approx([-2.5, 7.5])


def test_smooth_path() -> None:
    assert smooth_path([]) == ""
    assert smooth_path([(0, 0), (10, 0)]) == "M0.0,0.0 L10.0,0.0"
    assert smooth_path([(0, 0), (10, 20)]) == "M0.0,0.0 C5.0,0.0 5.0,20.0 10.0,20.0"


# ---- colours -----------------------------------------------------------------------------------


def test_colour_hash_by_hand() -> None:
    assert colour_index("") == 0
    assert colour_index("a") == 97 % 12  # 1
    assert colour_index("ab") == (97 * 31 + 98) % 12  # 3105 % 12 = 9
    # Past 2**32 the hash wraps like JavaScript's `>>> 0`.
    assert colour_index("cart") == 3046176 % 12 == 0  # ((99·31 + 97)·31 + 114)·31 + 116
    assert colour_index("checkout") == 6 and service_colour("checkout") == PALETTE[6]
    assert colour_index("frontend") == 10 and colour_index("loadgen") == 2
    assert colour_index("é😀") == ((233 * 31 + 0x1F600) & 0xFFFFFFFF) % 12  # code points, not UTF-16 units


def test_the_palette_is_the_javascripts() -> None:
    palette = re.search(r"PALETTE = \[(.*?)\];", UI_JS.read_text(), re.S)
    assert palette is not None and re.findall(r'"(#[0-9a-f]{6})"', palette.group(1)) == list(PALETTE)


# ---- helpers -------------------------------------------------------------------------------------


def test_text_helpers() -> None:
    assert percent_text(0, 0) == "0%" and percent_text(0, 5) == "0%"
    assert percent_text(1, 2) == "50%" and percent_text(1, 3) == "33.3%" and percent_text(1, 5000) == "<0.1%"
    assert (
        kinds_to_chart({1, 2, 3}) == (2,)
        and kinds_to_chart({5, 2}) == (2, 5)
        and kinds_to_chart({3, 1}) == (1, 3)
    )
    assert nice_step(100, 4) == 25 and nice_step(7, 4) == 2
    assert value_ticks(0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert value_ticks(7.3) == [0, 2, 4, 6, 8]
    minute = 60_000_000
    assert time_ticks(10 * minute + 1, 70 * minute) == [
        20 * minute,
        30 * minute,
        40 * minute,
        50 * minute,
        60 * minute,
        70 * minute,
    ]


def test_dependency_graph_drawing() -> None:
    graph = dependency_graph(
        [Dependency("a", "b", 100, 0), Dependency("a", "c", 10, 3), Dependency("b", "c", 50, 1)]
    )
    assert [n.name for n in graph.nodes] == ["a", "b", "c"]
    assert graph.calls == 160
    by_pair = {(e.parent, e.child): e for e in graph.edges}
    assert by_pair["a", "b"].label == "100 calls · 0% errors" and by_pair["a", "b"].tone == "ok"
    assert by_pair["a", "c"].label == "10 calls · 30% errors" and by_pair["a", "c"].tone == "bad"
    assert by_pair["b", "c"].tone == "warn"
    assert by_pair["a", "b"].stroke > by_pair["b", "c"].stroke > by_pair["a", "c"].stroke


# ---- the pages ---------------------------------------------------------------------------------


def edges_drawn(page: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(parent, child) → (calls, errors) of the edges in the SVG."""
    found = re.findall(
        r'data-parent="([^"]+)" data-child="([^"]+)"\s+data-calls="(\d+)" data-errors="(\d+)"', page
    )
    return {(p, c): (int(n), int(e)) for p, c, n, e in found}


def table_rows(page: str, css_class: str) -> list[list[str]]:
    """The text of each cell of each body row of the table with that class."""
    table = re.search(rf'<table class="data {css_class}".*?<tbody>(.*?)</tbody>', page, re.S)
    assert table is not None
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), re.S)
    ]


async def test_dependencies_page(http: httpx.AsyncClient) -> None:
    response = await http.get("/dependencies")
    assert response.status_code == 200
    page = response.text
    assert '<a href="/dependencies" aria-current="page">Services</a>' in page
    assert edges_drawn(page) == {
        ("frontend", "checkout"): (1, 0),
        ("checkout", "payment"): (1, 1),
        ("checkout", "currency"): (1, 0),
        ("frontend", "cart"): (2, 1),
    }
    nodes = re.findall(r'<a class="node" href="([^"]+)" data-service="([^"]+)"', page)
    assert sorted(nodes) == sorted(
        (f"/services/{n}", n) for n in ("frontend", "checkout", "payment", "currency", "cart")
    )
    assert "2 calls · 50% errors" in page and "1 calls · 100% errors" in page
    assert table_rows(page, "edges-table") == [
        ["checkout", "currency", "1", "0", "0%"],
        ["checkout", "payment", "1", "1", "100%"],
        ["frontend", "cart", "2", "1", "50%"],
        ["frontend", "checkout", "1", "0", "0%"],
    ]
    # Node boxes carry the service's colour.
    assert f'stroke="{service_colour("checkout")}"' in page
    # Six hours back the old trace D counts too.
    assert edges_drawn((await http.get("/dependencies", params={"lookback": "6h"})).text)[
        "frontend", "cart"
    ] == (
        3,
        1,
    )
    assert '<option value="6h" selected>' in (await http.get("/dependencies?lookback=6h")).text


async def test_dependencies_bad_lookback_and_no_data(http: httpx.AsyncClient, tmp_path: Path) -> None:
    response = await http.get("/dependencies", params={"lookback": "2d"})
    assert response.status_code == 400
    assert "lookback must be one of 15m, 1h, 6h, 24h, not &#39;2d&#39;" in response.text
    assert "<svg" not in response.text
    # A 15-minute window holds traces A to C while they are younger than that (they date from when the
    # tests were collected, ten minutes before): the window follows the clock, whenever this test runs.
    age_minutes = (time.time_ns() // 1000 - T0) / 60_000_000
    drawn = edges_drawn((await http.get("/dependencies?lookback=15m")).text)
    if age_minutes < 14.5:
        assert drawn
    elif age_minutes > 15.5:
        assert not drawn
    store = DuckDBStore(tmp_path / "empty.duckdb")
    try:
        async with client(store) as empty:
            page = (await empty.get("/dependencies")).text
    finally:
        store.close()
    assert "No calls between services in the last hour." in page and "<svg" not in page


async def test_services_redirects_to_the_graph(http: httpx.AsyncClient) -> None:
    response = await http.get("/services", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/dependencies"
    response = await http.get("/services?lookback=6h", follow_redirects=False)
    assert response.headers["location"] == "/dependencies?lookback=6h"
    assert (await http.get("/services/", follow_redirects=False)).headers["location"] == "/dependencies"


def charts_of(page: str) -> dict[str, str]:
    """Each chart's figure markup by key."""
    return dict(re.findall(r'<figure class="panel chart" id="chart-(\w+)".*?>(.*?)</figure>', page, re.S))


async def test_service_page(http: httpx.AsyncClient) -> None:
    response = await http.get("/services/cart")
    assert response.status_code == 200
    page = response.text
    charts = charts_of(page)
    assert list(charts) == ["rate", "errors", "latency"]
    assert charts["rate"].count('class="point"') == 60  # every step has a rate, zero without calls
    assert charts["errors"].count('class="point"') == 1  # …an error rate only with calls
    assert "errors 50%" in charts["errors"]
    assert [s for s in re.findall(r'data-series="([^"]+)"', charts["latency"])] == ["p50", "p95", "p99"]
    assert charts["latency"].count('class="point"') == 3
    assert "No requests in this time range" not in page
    assert table_rows(page, "operations-table") == [
        ["AddItem", "1", "1", "100%"],
        ["GetCart", "1", "0", "0%"],
    ]
    assert (
        '<option value="AddItem">AddItem</option>' in page
        and '<option value="">All operations</option>' in page
    )
    assert f'href="/trace/{TRACE_C}"' in page and f'href="/trace/{TRACE_A}"' not in page
    assert "from server spans" in page


async def test_service_page_for_one_operation(http: httpx.AsyncClient) -> None:
    # An hour's window: the shared data set dates from when the tests were collected, minutes ago.
    page = (await http.get("/services/cart", params={"operation": "GetCart", "lookback": "1h"})).text
    charts = charts_of(page)
    assert charts["errors"].count('class="point"') == 1 and "errors 0%" in charts["errors"]
    assert '<option value="GetCart" selected>' in page and '<option value="1h" selected>' in page
    assert "in steps of 1m" in page  # 60 steps of a minute over the hour


async def test_service_error_traces(http: httpx.AsyncClient) -> None:
    page = (await http.get("/services/checkout")).text
    rows = table_rows(page, "error-traces")
    assert len(rows) == 1
    assert f'href="/trace/{TRACE_A}"' in page
    assert "payment/Charge" in rows[0][1] and "card declined" in rows[0][1]
    assert "frontend: GET /checkout" in rows[0][0]
    quiet = (await http.get("/services/currency")).text
    assert "No traces with errors in currency" in quiet


async def test_service_page_errors(http: httpx.AsyncClient) -> None:
    response = await http.get("/services/nobody")
    assert response.status_code == 404
    assert "No spans of a service named &#39;nobody&#39; are stored." in response.text
    response = await http.get("/services/cart", params={"lookback": "1w"})
    assert response.status_code == 400 and "lookback must be one of" in response.text
    response = await http.get("/services/cart", params={"operation": "Nope<script>"})
    assert response.status_code == 400
    assert "cart has no operation named &#39;Nope&lt;script&gt;&#39;." in response.text
    assert "<script>" not in response.text.replace('<script src="/static/ui.js"></script>', "")


def test_charts_without_data() -> None:
    window = Window.ending_now("1h", 3_600_000_000 * 500)
    assert window.end_us - window.start_us == 3_600_000_000 and window.step_us == 60_000_000
    rate, errors, latency = red_charts([], window)
    assert len(rate.lines[0].points) == 60 and rate.has_data  # no calls: a rate of zero
    assert not errors.has_data and not latency.has_data  # no error rate or latency without calls
