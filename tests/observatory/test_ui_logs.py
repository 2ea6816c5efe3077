"""The Logs page's form on the server: how its fields become `/api/logs` parameters, its errors, the links
to it (navigation, the trace page). The records themselves are drawn in the browser: test_ui_logs_browser."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.datastructures import QueryParams

from boutique.observatory.ui.logs import FormError, filter_params, form_values, tags_json, time_params
from boutique.observatory.ui.search import utc_field
from boutique.observatory.ui.timefmt import LOOKBACKS
from tests.observatory.test_api_jaeger import T0, TRACE_A

NOW = T0 + 3_600_000_000


def api_query(params: dict[str, str]) -> list[tuple[str, str]]:
    """The `/api/logs` parameters the page makes of its own."""
    query = QueryParams(params)
    form = form_values(query)
    return [*filter_params(form), *time_params(form, query, NOW)]


def test_tags_become_a_json_object() -> None:
    assert json.loads(tags_json("http.route=/cart order.id=42")) == {"http.route": "/cart", "order.id": "42"}
    assert json.loads(tags_json('note="two words" empty=')) == {"note": "two words", "empty": ""}
    assert json.loads(tags_json("url=a=b")) == {"url": "a=b"}  # split at the first "="
    assert tags_json('{"order.id": 42}') == '{"order.id": 42}'  # a JSON object goes as the API takes it
    for bad in ("alone", "=value", '"unclosed', "{not json", "[1, 2]"):
        with pytest.raises(FormError) as caught:
            tags_json(bad)
        assert caught.value.field == "tags"


def test_filters_and_time() -> None:
    # The default: the last hour.
    assert api_query({}) == [("start", str(NOW - LOOKBACKS["1h"]))]
    assert api_query({"service": "cart", "minSeverity": "warn", "q": "declined", "lookback": "15m"}) == [
        ("service", "cart"),
        ("minSeverity", "WARN"),
        ("q", "declined"),
        ("start", str(NOW - LOOKBACKS["15m"])),
    ]
    # A trace's or span's logs: at any time unless a time is given; ids go lower-case.
    assert api_query({"traceID": TRACE_A.upper()}) == [("traceID", TRACE_A)]
    assert api_query({"spanID": "A1"}) == [("spanID", "a1")]
    assert api_query({"traceID": TRACE_A, "lookback": "5m"}) == [
        ("traceID", TRACE_A),
        ("start", str(NOW - LOOKBACKS["5m"])),
    ]
    # From/To (UTC) or the API's own start/end; "all" has no bound.
    assert api_query({"from": utc_field(T0), "to": utc_field(T0 + 60_000_000)}) == [
        ("start", str(T0)),
        ("end", str(T0 + 60_000_000)),
    ]
    assert api_query({"start": "5", "end": "9"}) == [("start", "5"), ("end", "9")]
    assert api_query({"lookback": "all"}) == []
    with pytest.raises(FormError, match="lookback"):
        api_query({"lookback": "3h"})
    with pytest.raises(FormError, match="from"):
        api_query({"from": "yesterday"})


def test_form_shows_times_given_in_microseconds() -> None:
    form = form_values(QueryParams({"start": str(T0), "end": str(T0 + 1_000_000)}))
    assert (form.from_, form.to, form.lookback) == (utc_field(T0), utc_field(T0 + 1_000_000), "custom")
    assert form_values(QueryParams({"traceID": TRACE_A})).lookback == "all"
    assert form_values(QueryParams({"tail": "1"})).tail


def embedded(page: str, name: str) -> list[tuple[str, str]]:
    """A query the page hands its script (`data-query`, `data-tail`), as pairs."""
    found = re.search(rf'data-{name}="([^"]*)"', page)
    assert found, f"no data-{name} in the page"
    return parse_qsl(html.unescape(found.group(1)), keep_blank_values=True)


async def test_page_hands_the_api_query_to_its_script(http: httpx.AsyncClient) -> None:
    answer = await http.get(
        "/logs", params={"service": "cart", "minSeverity": "ERROR", "tags": "k=v", "limit": "50", "tail": "1"}
    )
    assert answer.status_code == 200
    query = dict(embedded(answer.text, "query"))
    assert query["service"] == "cart" and query["minSeverity"] == "ERROR" and query["limit"] == "50"
    assert json.loads(query["tags"]) == {"k": "v"}
    assert "start" in query
    tail = dict(embedded(answer.text, "tail"))
    assert tail == {"service": "cart", "minSeverity": "ERROR", "tags": '{"k":"v"}'}  # no time, no limit
    assert 'id="live-tail" checked' in answer.text
    assert '<option value="ERROR" selected>' in answer.text
    # The API takes the query (the tail's is an endless stream: the browser test reads it).
    found = await http.get("/api/logs", params=embedded(answer.text, "query"))
    assert found.status_code == 200, found.text


async def test_bad_fields_keep_the_form(http: httpx.AsyncClient) -> None:
    answer = await http.get("/logs", params={"tags": "nokey", "q": "kept"})
    assert answer.status_code == 400
    assert "Tags: &#39;nokey&#39; is not key=value" in answer.text
    assert 'value="kept"' in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert "data-query" not in answer.text  # nothing is searched


async def test_navigation_and_trace_page_link_here(http: httpx.AsyncClient) -> None:
    page = (await http.get("/search")).text
    assert '<a href="/logs">Logs</a>' in page and '<a href="/charts">Metrics</a>' in page
    logs_page = (await http.get("/logs")).text
    assert '<a href="/logs" aria-current="page">Logs</a>' in logs_page
    trace_page = (await http.get(f"/trace/{TRACE_A}")).text
    assert f'href="/logs?traceID={TRACE_A}"' in trace_page
    assert "All logs of this trace" in trace_page
