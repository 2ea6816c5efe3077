"""The Metrics page's pieces on the server: functions per kind, value formats, lines and exemplars of API
answers, the window and the links it makes. The page over real data: test_ui_metrics_browser."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.datastructures import QueryParams

from boutique.observatory.ui import charts
from boutique.observatory.ui.metric_chart import (
    ALL_QUANTILES,
    api_queries,
    bare_unit,
    biggest,
    exemplar_marks,
    functions,
    lines_of,
    metric_chart,
    value_format,
)
from boutique.observatory.ui.metrics import (
    BadParameter,
    Choice,
    choice_of,
    instruments,
    page_url,
    traces_url,
    window_of,
)
from boutique.observatory.ui.pages import PALETTE
from boutique.observatory.ui.search import utc_field
from tests.observatory.test_api_jaeger import T0, TRACE_A, TRACE_B

S = 1_000_000
SERIES = [
    {"name": "rpc_requests", "service": "cart", "kind": "sum", "unit": "{request}", "description": "Calls",
     "temporality": "cumulative", "monotonic": True, "labels": {"method": ["Get", "Add"], "code": ["OK"]}},
    {"name": "rpc_requests", "service": "cart", "kind": "sum", "unit": "{request}", "description": "Calls",
     "temporality": "cumulative", "monotonic": True, "labels": {"code": ["UNAVAILABLE"]}},
    {"name": "rpc_duration", "service": "cart", "kind": "histogram", "unit": "s", "description": "",
     "temporality": "delta", "monotonic": False, "labels": {"method": ["Get"]}},
    {"name": "queue_depth", "service": "checkout", "kind": "gauge", "unit": "1", "description": "",
     "temporality": "", "monotonic": False, "labels": {}},
]  # fmt: skip


def test_functions_suit_the_kind() -> None:
    assert functions("sum", True)[0][0] == "rate"
    assert functions("sum", False)[0][0] == "value"
    assert [value for value, _ in functions("gauge", False)] == ["value", "avg", "min", "max"]
    histogram = [value for value, _ in functions("histogram", False)]
    assert histogram[0] == ALL_QUANTILES and {"p50", "p95", "p99", "count_rate"} <= set(histogram)
    assert functions("exponential_histogram", False) == functions("histogram", False)
    assert api_queries("p95") == [("", [("fn", "quantile"), ("quantile", "0.95")])]
    assert [prefix for prefix, _ in api_queries(ALL_QUANTILES)] == ["p50", "p95", "p99"]
    assert api_queries("rate") == [("", [("fn", "rate")])]


def test_values_are_written_in_their_unit() -> None:
    assert bare_unit("{request}") == "" and bare_unit("By{bytes}") == "By" and bare_unit("1") == ""
    assert value_format("s", "p95")(0.0123) == "12.3ms"
    assert value_format("ms", "avg")(1500) == "1.5s"
    assert value_format("{request}", "rate")(2.5) == "2.5/s"
    assert value_format("By", "rate")(2048) == "2.05k By/s"
    assert value_format("s", "count_rate")(3) == "3/s"
    assert value_format("s", "count")(1234567) == "1.23M"
    assert value_format("1", "value")(-4) == "-4"


def test_instruments_of_a_service_join_their_labels() -> None:
    found = instruments(SERIES, "cart")
    assert list(found) == ["rpc_duration", "rpc_requests"]
    requests = found["rpc_requests"]
    assert requests.labels == {"method": ["Add", "Get"], "code": ["OK", "UNAVAILABLE"]}
    assert requests.kind_text == "monotonic cumulative sum"
    assert found["rpc_duration"].kind_text == "delta histogram"
    assert list(instruments(SERIES, "checkout")) == ["queue_depth"]


def test_choice_keeps_only_what_the_instrument_has() -> None:
    known = instruments(SERIES, "cart")
    params = QueryParams(
        "service=cart&name=rpc_requests&fn=p95&filter.method=Get&filter.gone=x&groupBy=code,gone&groupBy=instance"
    )
    choice, instrument = choice_of(params, known)
    assert instrument is known["rpc_requests"]
    assert choice.fn == "rate"  # p95 is no function of a sum: the default
    assert choice.filters == {"method": "Get"}
    assert choice.group_by == ["code", "instance"]
    choice, instrument = choice_of(QueryParams("service=cart&name=nothing"), known)
    assert instrument is None and choice.name == ""


def test_window() -> None:
    now = T0
    window = window_of(QueryParams("lookback=15m"), now)
    assert (window.start_us, window.end_us, window.zoomed) == (now - 900 * S, now, False)
    assert window.step_us == 15 * S  # never below the floor
    assert window_of(QueryParams("lookback=24h"), now).step_us == 24 * 3600 * S // 120
    zoomed = window_of(QueryParams(f"start={now - 60 * S}&end={now}"), now)
    assert (zoomed.start_us, zoomed.end_us, zoomed.zoomed) == (now - 60 * S, now, True)
    for bad in ("lookback=2h", f"start={now}&end={now - 1}", "start=soon"):
        with pytest.raises(BadParameter):
            window_of(QueryParams(bad), now)


def test_links() -> None:
    window = window_of(QueryParams(f"start={T0}&end={T0 + 60 * S}"), T0)
    choice = Choice("cart", "rpc_requests", "rate", {"method": "Get"}, ["code"])
    query = parse_qs(urlsplit(page_url(choice, window)).query)
    assert query == {
        "service": ["cart"], "name": ["rpc_requests"], "fn": ["rate"], "filter.method": ["Get"],
        "groupBy": ["code"], "lookback": ["1h"], "start": [str(T0)], "end": [str(T0 + 60 * S)],
    }  # fmt: skip
    assert "start" not in page_url(choice, window, start=None, end=None)
    assert parse_qs(urlsplit(traces_url("cart", T0, T0 + S)).query) == {
        "service": ["cart"],
        "start": [str(T0)],
        "end": [str(T0 + S)],
    }


async def test_search_page_takes_a_windows_link(http: httpx.AsyncClient) -> None:
    """The link a chart's window makes opens the search page on that service and time range."""
    answer = await http.get(traces_url("frontend", T0 + 500_000, T0 + 1_500_000))
    assert answer.status_code == 200
    assert f"/trace/{TRACE_B}" in answer.text and f"/trace/{TRACE_A}" not in answer.text
    assert f'value="{utc_field(T0)}"' in answer.text  # From, to the second


def test_lines_and_chart_of_answers() -> None:
    points = [[T0, 1.0], [T0 + 60 * S, None], [T0 + 120 * S, 3.0]]
    one = lines_of([("", [{"labels": {}, "points": points}])], "rpc_requests")
    assert [(line.name, line.colour) for line in one] == [("rpc_requests", PALETTE[0])]
    grouped = lines_of(
        [
            (
                "",
                [
                    {"labels": {"code": "OK", "method": "Get"}, "points": points},
                    {"labels": {"code": "X"}, "points": []},
                ],
            )
        ],
        "x",
    )
    assert [line.name for line in grouped] == ["code=OK, method=Get", "code=X"]
    quantiles = lines_of([(q, [{"labels": {}, "points": points}]) for q in ("p50", "p95", "p99")], "x")
    assert [line.name for line in quantiles] == ["p50", "p95", "p99"]
    assert quantiles[2].colour == "#c62828"

    marks = exemplar_marks(
        [
            {
                "time": T0 + 60 * S,
                "value": 0.25,
                "traceID": TRACE_A,
                "spanID": "a1",
                "labels": {"method": "Get"},
            },
            {"time": T0, "value": 0.5, "traceID": TRACE_B, "spanID": "", "labels": {"method": "Add"}},
            {"time": T0, "value": 0.5, "traceID": "", "spanID": "", "labels": {}},
        ],
        {"method": "Get"},
        True,
        value_format("s", "p95"),
    )
    assert [(m.href, m.value) for m in marks] == [(f"/trace/{TRACE_A}?span=a1", 0.25)]
    chart = metric_chart("t", (T0 - 60 * S, T0 + 180 * S), one, str, marks)
    assert (chart.start_us, chart.end_us) == (T0 - 60 * S, T0 + 180 * S)
    assert len(chart.lines[0].points) == 2 and chart.lines[0].path.count("M") == 2  # a gap breaks the line
    assert chart.left < chart.lines[0].points[0].x  # the window starts before the first point
    dot = chart.exemplars[0]
    assert chart.top <= dot.y <= chart.bottom and dot.href == f"/trace/{TRACE_A}?span=a1"
    unmeasured = exemplar_marks([{"time": T0, "value": 9, "traceID": TRACE_A}], {}, False, str)
    flat = metric_chart("t", (T0 - 60 * S, T0 + 180 * S), one, str, unmeasured)
    assert flat.exemplars[0].y == flat.bottom - 5  # on the time axis: its value is not on this scale


def test_biggest_lines_are_kept_in_order() -> None:
    lines = lines_of([("", [{"labels": {"k": str(v)}, "points": [[T0, v]]} for v in (3, 9, 1, 7)])], "x")
    assert [line.name for line in biggest(lines, 2)] == ["k=9", "k=7"]
    assert biggest(lines, 10) == lines


def test_negative_values_get_ticks_below_zero() -> None:
    assert charts.value_ticks(5, lowest=-3) == [-4, -2, 0, 2, 4, 6]
    assert charts.value_ticks(0, lowest=-7)[0] <= -7 and charts.value_ticks(0, lowest=-7)[-1] == 0
    assert charts.value_ticks(7) == [0, 2, 4, 6, 8]  # unchanged without negatives
