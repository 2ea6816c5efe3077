"""Jaeger api/v3 trace summaries (`GET /api/v3/trace-summaries`, Jaeger UI 2.x's search page).

Shapes are compared field by field against Jaeger's own golden file, messages against what Jaeger's Go
gateway writes; the data set is the one the other query API tests share, plus a real observatory process
fed by a real OpenTelemetry exporter.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.duckdb_store import DuckDBStore
from tests.observatory.process import start_observatory
from tests.observatory.test_api_jaeger import (
    CART,
    FRONTEND_1,
    MS,
    SERVER,
    T0,
    TRACE_A,
    TRACE_B,
    TRACE_C,
    TRACE_D,
    S,
    client,
    request,
)
from tests.observatory.test_process import finished_trace, hex_id

ROUTE = "/api/v3/trace-summaries"
TRACE_D_START = T0 - 2 * 3600 * 1_000_000
# Jaeger's golden file, cmd/jaeger/internal/extension/jaegerquery/internal/apiv3/snapshots/
# FindTraceSummaries.json at commit 008074a29040285a7833dcec0aaeed6ec9e6fe43 (keys sorted there by the
# snapshot writer; proto3 JSON leaves out orphanSpanCount, which is 0).
JAEGER_SNAPSHOT: dict[str, Any] = {
    "summaries": [
        {
            "errorSpanCount": 1,
            "maxEndTimeUnixNano": "1001000000000",
            "minStartTimeUnixNano": "1000000000000",
            "rootOperationName": "HTTP GET /",
            "rootServiceName": "frontend",
            "services": [{"errorSpanCount": 1, "name": "frontend", "spanCount": 2}],
            "spanCount": 2,
            "traceId": "00000000000000000000000000000001",
        }
    ]
}
# The field order of jaeger.api_v3.TraceSummary and ServiceSummary (query_service.proto in
# jaegertracing/jaeger-idl at commit 000e4daeaf0bb3c6e8ef39de46becaf48e789d07), which jsonpb writes in.
SUMMARY_FIELDS = [
    "traceId",
    "rootServiceName",
    "rootOperationName",
    "minStartTimeUnixNano",
    "maxEndTimeUnixNano",
    "spanCount",
    "errorSpanCount",
    "orphanSpanCount",
    "services",
]
SERVICE_FIELDS = ["name", "spanCount", "errorSpanCount"]


def iso(us: int) -> str:
    """Unix microseconds as RFC 3339 with milliseconds, the way Jaeger UI sends times (toISOString)."""
    moment = datetime.fromtimestamp(us // 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000 // 1000:03d}Z"


def window(low_us: int = T0 - 60_000 * MS, high_us: int = T0 + 60_000 * MS) -> dict[str, str]:
    """The required time range (snake_case spelling)."""
    return {"query.start_time_min": iso(low_us), "query.start_time_max": iso(high_us)}


def check_order(summary: dict[str, Any]) -> None:
    """Fields come in proto order, services too, and no zero value is written."""
    assert list(summary) == [f for f in SUMMARY_FIELDS if f in summary], list(summary)
    for service in summary.get("services", []):
        assert list(service) == [f for f in SERVICE_FIELDS if f in service], list(service)
        assert all(value not in ("", 0) for value in service.values())
    assert all(value not in ("", 0, []) for value in summary.values())


async def summaries(http: httpx.AsyncClient, params: dict[str, str]) -> list[dict[str, Any]]:
    """The summaries of a successful search, each checked for order."""
    response = await http.get(ROUTE, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) <= {"summaries"}
    found = body.get("summaries", [])
    for summary in found:
        check_order(summary)
    return found


@pytest.fixture
async def golden(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A store holding the trace behind Jaeger's snapshot: two frontend spans, one an error, at t=1000 s."""
    store = DuckDBStore(tmp_path / "golden.duckdb")
    trace = "00000000000000000000000000000001"
    spans = [
        S(trace, "0000000000000002", "", "HTTP GET /", SERVER, 1_000_000_000, 1_000_000),
        S(trace, "0000000000000003", "0000000000000002", "db", 3, 1_000_100_000, 400_000, status=2),
    ]
    store.append(decode(request([(FRONTEND_1, ("boutique.frontend", "1.0"), spans)]).SerializeToString()))
    # A partial trace at t=2000 s: two spans without a parent (the earlier is the root), one orphan.
    partial = "000000000000000000000000000000aa"
    store.append(
        decode(
            request(
                [
                    (
                        CART,
                        ("boutique.cart", ""),
                        [S(partial, "00000000000000b1", "", "late", SERVER, 2_000_500_000, 10)],
                    ),
                    (
                        FRONTEND_1,
                        ("boutique.frontend", "1.0"),
                        [
                            S(partial, "00000000000000b2", "", "early", SERVER, 2_000_000_000, 1_000_000),
                            S(partial, "00000000000000b3", "00000000000000ff", "lost", 3, 2_000_100_000, 10),
                        ],
                    ),
                ]
            ).SerializeToString()
        )
    )
    try:
        async with client(store) as http:
            yield http
    finally:
        store.close()


async def test_the_answer_matches_jaegers_snapshot(golden: httpx.AsyncClient) -> None:
    params = {"query.startTimeMin": "1970-01-01T00:00:00Z", "query.startTimeMax": "1970-01-01T00:20:00Z"}
    response = await golden.get(ROUTE, params=params)
    assert response.status_code == 200
    body = response.json()
    assert body == JAEGER_SNAPSHOT
    (summary,) = body["summaries"]
    (expected,) = JAEGER_SNAPSHOT["summaries"]
    for name in SUMMARY_FIELDS:
        assert (name in summary) == (name in expected), name
        if name in expected:
            assert type(summary[name]) is type(expected[name]), name
            assert summary[name] == expected[name], name
    check_order(summary)
    assert "orphanSpanCount" not in summary, "zero is left out, as proto3 JSON does"


async def test_root_is_the_earliest_parentless_span_and_orphans_are_counted(
    golden: httpx.AsyncClient,
) -> None:
    params = {"query.startTimeMin": "1970-01-01T00:30:00Z", "query.startTimeMax": "1970-01-01T00:40:00Z"}
    assert await summaries(golden, params) == [
        {
            "traceId": "000000000000000000000000000000aa",
            "rootServiceName": "frontend",
            "rootOperationName": "early",
            "minStartTimeUnixNano": "2000000000000",
            "maxEndTimeUnixNano": "2001000000000",
            "spanCount": 3,
            "orphanSpanCount": 1,
            "services": [{"name": "cart", "spanCount": 1}, {"name": "frontend", "spanCount": 2}],
        }
    ]


async def test_summaries_of_the_shared_data_set(http: httpx.AsyncClient) -> None:
    found = await summaries(http, window())
    by_id = {s["traceId"]: s for s in found}
    assert set(by_id) == {TRACE_A, TRACE_B, TRACE_C}, "TRACE_D is two hours old, outside the window"
    assert [s["traceId"] for s in found] == [TRACE_C, TRACE_B, TRACE_A], "newest first"
    assert by_id[TRACE_A] == {
        "traceId": TRACE_A,
        "rootServiceName": "frontend",
        "rootOperationName": "GET /checkout",
        "minStartTimeUnixNano": str(T0 * 1000),
        "maxEndTimeUnixNano": str((T0 + 50 * MS) * 1000),
        "spanCount": 8,
        "errorSpanCount": 2,
        "services": [
            {"name": "checkout", "spanCount": 4, "errorSpanCount": 1},
            {"name": "currency", "spanCount": 1},
            {"name": "frontend", "spanCount": 2},
            {"name": "payment", "spanCount": 1, "errorSpanCount": 1},
        ],
    }
    assert by_id[TRACE_B] == {
        "traceId": TRACE_B,
        "rootServiceName": "frontend",
        "rootOperationName": "GET /cart",
        "minStartTimeUnixNano": str((T0 + 1000 * MS) * 1000),
        "maxEndTimeUnixNano": str((T0 + 1010 * MS) * 1000),
        "spanCount": 3,
        "services": [{"name": "cart", "spanCount": 1}, {"name": "frontend", "spanCount": 2}],
    }
    assert by_id[TRACE_C]["errorSpanCount"] == 2
    assert by_id[TRACE_C]["maxEndTimeUnixNano"] == str((T0 + 2120 * MS) * 1000)


async def test_filters_in_both_spellings(http: httpx.AsyncClient) -> None:
    camel = {"query.startTimeMin": iso(T0 - 60_000 * MS), "query.startTimeMax": iso(T0 + 60_000 * MS)}
    assert [s["traceId"] for s in await summaries(http, {**camel, "query.serviceName": "cart"})] == [
        TRACE_C,
        TRACE_B,
    ]
    assert [s["traceId"] for s in await summaries(http, {**window(), "query.service_name": "payment"})] == [
        TRACE_A
    ]
    by_operation = await summaries(
        http, {**camel, "query.serviceName": "cart", "query.operationName": "AddItem"}
    )
    assert [s["traceId"] for s in by_operation] == [TRACE_C]
    snake = await summaries(
        http, {**window(), "query.service_name": "cart", "query.operation_name": "GetCart"}
    )
    assert [s["traceId"] for s in snake] == [TRACE_B]
    slow = await summaries(http, {**camel, "query.durationMin": "100ms"})
    assert [s["traceId"] for s in slow] == [TRACE_C]
    quick = await summaries(http, {**window(), "query.duration_max": "4ms", "query.service_name": "checkout"})
    assert [s["traceId"] for s in quick] == [TRACE_A], "prepare order lasts 2 ms"
    tagged = await summaries(http, {**camel, "query.attributes": json.dumps({"http.status_code": "500"})})
    assert [s["traceId"] for s in tagged] == [TRACE_C]
    hosts = await summaries(http, {**window(), "query.attributes": '{"host.name":"box2"}'})
    assert [s["traceId"] for s in hosts] == [TRACE_B]
    assert await summaries(http, {**camel, "query.attributes": "null"}) != []
    assert await summaries(http, {**camel, "query.serviceName": "nobody"}) == []
    empty = await http.get(ROUTE, params={**camel, "query.serviceName": "nobody"})
    assert empty.json() == {}, "no summaries: proto3 JSON leaves the empty list out"


async def test_the_canonical_spelling_wins_and_empty_counts_as_absent(http: httpx.AsyncClient) -> None:
    both = {**window(), "query.serviceName": "payment", "query.service_name": "cart"}
    assert [s["traceId"] for s in await summaries(http, both)] == [TRACE_A]
    blank = {**window(), "query.serviceName": "", "query.service_name": "cart"}
    assert [s["traceId"] for s in await summaries(http, blank)] == [TRACE_C, TRACE_B]


async def test_search_depth_default_and_spellings(http: httpx.AsyncClient) -> None:
    wide = window(T0 - 3 * 3600 * 1_000_000, T0 + 60_000 * MS)
    assert len(await summaries(http, wide)) == 4, "the default depth (100) finds all four"
    for name in ("query.searchDepth", "query.search_depth", "query.num_traces"):
        found = await summaries(http, {**wide, name: "2"})
        assert [s["traceId"] for s in found] == [TRACE_C, TRACE_B], name
    precedence = {**wide, "query.searchDepth": "1", "query.search_depth": "3", "query.num_traces": "4"}
    assert len(await summaries(http, precedence)) == 1
    assert len(await summaries(http, {**wide, "query.searchDepth": "+1500"})) == 4


async def test_time_bounds_are_inclusive_then_exclusive(http: httpx.AsyncClient) -> None:
    # TRACE_A's first span starts at T0, its next one 2 ms later.
    whole = datetime.fromtimestamp(T0 // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    at_t0 = f"{whole}.{T0 % 1_000_000:06d}Z"
    exactly = {"query.startTimeMin": at_t0, "query.startTimeMax": iso(T0 + 1 * MS)}
    assert [s["traceId"] for s in await summaries(http, exactly)] == [TRACE_A], "start_time_min is inclusive"
    before = {"query.startTimeMin": iso(T0 - 500 * MS), "query.startTimeMax": at_t0}
    assert await summaries(http, before) == [], "start_time_max is exclusive"
    one_ns_later = {
        "query.startTimeMin": f"{whole}.{T0 % 1_000_000:06d}001Z",
        "query.startTimeMax": iso(T0 + MS),
    }
    assert await summaries(http, one_ns_later) == [], "nanoseconds count"
    plus_two = timezone(timedelta(hours=2))
    shifted = datetime.fromtimestamp(T0 / 1_000_000, plus_two).isoformat()
    assert shifted.endswith("+02:00")
    assert [s["traceId"] for s in await summaries(http, {**exactly, "query.startTimeMin": shifted})] == [
        TRACE_A
    ]
    old = await summaries(http, window(TRACE_D_START - MS, TRACE_D_START + MS))
    assert [s["traceId"] for s in old] == [TRACE_D]


GOOD_MIN, GOOD_MAX = "2024-05-01T12:00:00Z", "2024-05-01T13:00:00Z"
LAYOUT = '"2006-01-02T15:04:05.999999999Z07:00"'
REQUIRED = "query.startTimeMin and query.startTimeMax are required"
BEFORE = "query.startTimeMin must be before query.startTimeMax"
DEPTH = "search depth must be greater than 0 and less than max traces"
MIN_ONLY = {"query.startTimeMax": GOOD_MAX}


def malformed(name: str, reason: str) -> str:
    """Jaeger's message for a parameter it cannot read."""
    return f"malformed parameter {name}: {reason}"


def unparsable_time(value: str, rest: str, element: str) -> str:
    """Go's time.Parse message for a value it stopped reading at `rest`."""
    return f'parsing time "{value}" as {LAYOUT}: cannot parse "{rest}" as "{element}"'


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, REQUIRED),
        ({"query.start_time_max": GOOD_MAX}, REQUIRED),
        ({"query.startTimeMin": GOOD_MIN, "query.startTimeMax": ""}, REQUIRED),
        (
            {"query.start_time_min": "2024-05-01 12:00:00Z", "query.start_time_max": GOOD_MAX},
            malformed("query.start_time_min", unparsable_time("2024-05-01 12:00:00Z", " 12:00:00Z", "T")),
        ),
        (
            {"query.startTimeMin": "yesterday", **MIN_ONLY},
            malformed("query.startTimeMin", unparsable_time("yesterday", "yesterday", "2006")),
        ),
        (
            {"query.startTimeMin": GOOD_MIN, "query.startTimeMax": "2024-05-01T13:00:00"},
            malformed("query.startTimeMax", unparsable_time("2024-05-01T13:00:00", "", "Z07:00")),
        ),
        (
            {"query.startTimeMin": "2024-13-01T00:00:00Z", **MIN_ONLY},
            malformed("query.startTimeMin", 'parsing time "2024-13-01T00:00:00Z": month out of range'),
        ),
        (
            {"query.startTimeMin": "2023-02-29T00:00:00Z", **MIN_ONLY},
            malformed("query.startTimeMin", 'parsing time "2023-02-29T00:00:00Z": day out of range'),
        ),
        (
            {"query.startTimeMin": "2024-05-01T12:00:00Zjunk", **MIN_ONLY},
            malformed("query.startTimeMin", 'parsing time "2024-05-01T12:00:00Zjunk": extra text: "junk"'),
        ),
        ({"query.startTimeMin": GOOD_MAX, "query.startTimeMax": GOOD_MIN}, BEFORE),
        ({"query.startTimeMin": GOOD_MIN, "query.startTimeMax": GOOD_MIN}, BEFORE),
        ({"query.durationMin": "5"}, malformed("query.durationMin", 'time: missing unit in duration "5"')),
        (
            {"query.duration_max": "5x"},
            malformed("query.duration_max", 'time: unknown unit "x" in duration "5x"'),
        ),
        ({"query.duration_min": "fast"}, malformed("query.duration_min", 'time: invalid duration "fast"')),
        ({"query.durationMax": "."}, malformed("query.durationMax", 'time: invalid duration "."')),
        (
            {"query.attributes": "{bad"},
            malformed("query.attributes", "invalid character 'b' looking for beginning of object key string"),
        ),
        ({"query.attributes": '{"a":"b"'}, malformed("query.attributes", "unexpected end of JSON input")),
        (
            {"query.attributes": '["a"]'},
            malformed(
                "query.attributes", "json: cannot unmarshal array into Go value of type map[string]string"
            ),
        ),
        (
            {"query.attributes": '{"http.status_code":500}'},
            malformed("query.attributes", "json: cannot unmarshal number into Go value of type string"),
        ),
        (
            {"query.attributes": '{"a":NaN}'},
            malformed("query.attributes", "invalid character 'N' looking for beginning of value"),
        ),
        (
            {"query.searchDepth": "many"},
            malformed("query.searchDepth", 'strconv.Atoi: parsing "many": invalid syntax'),
        ),
        (
            {"query.num_traces": "99999999999999999999"},
            malformed("query.num_traces", 'strconv.Atoi: parsing "99999999999999999999": value out of range'),
        ),
        ({"query.search_depth": "0"}, DEPTH),
        ({"query.searchDepth": "-3"}, DEPTH),
        ({"query.searchDepth": "1501"}, DEPTH),
        (
            {"query.rawTraces": "maybe"},
            malformed("query.rawTraces", 'strconv.ParseBool: parsing "maybe": invalid syntax'),
        ),
    ],
)
async def test_bad_parameters_are_400_with_jaegers_message(
    http: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    needs_window = not any(name.startswith("query.start") for name in params) and params
    sent = (
        {"query.startTimeMin": GOOD_MIN, "query.startTimeMax": GOOD_MAX, **params} if needs_window else params
    )
    response = await http.get(ROUTE, params=sent)
    assert response.status_code == 400
    assert response.json() == {"error": {"httpCode": 400, "message": message}}


async def test_the_first_bad_parameter_in_jaegers_order_is_reported(http: httpx.AsyncClient) -> None:
    bad_everything = {
        "query.attributes": "[",
        "query.startTimeMin": "x",
        "query.searchDepth": "0",
        "query.durationMin": "y",
    }
    message = (await http.get(ROUTE, params=bad_everything)).json()["error"]["message"]
    assert message.startswith("malformed parameter query.attributes")
    del bad_everything["query.attributes"]
    assert (await http.get(ROUTE, params=bad_everything)).json()["error"]["message"] == REQUIRED
    bad_everything["query.startTimeMax"] = GOOD_MAX
    message = (await http.get(ROUTE, params=bad_everything)).json()["error"]["message"]
    assert message.startswith("malformed parameter query.startTimeMin")
    bad_everything["query.startTimeMin"] = GOOD_MIN
    message = (await http.get(ROUTE, params=bad_everything)).json()["error"]["message"]
    assert message.startswith("malformed parameter query.durationMin"), "the depth range is checked last"


async def test_only_get_is_served(http: httpx.AsyncClient) -> None:
    assert (await http.post(ROUTE, json={"query": {}})).status_code == 405


def test_a_real_observatory_answers_jaeger_uis_search(tmp_path: Path) -> None:
    observatory = start_observatory(tmp_path / "data")
    try:
        exporter = HttpExporter(endpoint=f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1/traces")
        spans = finished_trace("summaries-shop")
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        trace_id = hex_id(spans[0].context.trace_id, 32)
        first = min(s.start_time for s in spans)
        last = max(s.end_time for s in spans)
        # What Jaeger UI 2.x sends: camelCase names, ISO times with milliseconds, a depth, a duration.
        params = {
            "query.serviceName": "summaries-shop",
            "query.startTimeMin": iso(first // 1000 - 3_600_000_000),
            "query.startTimeMax": iso(last // 1000 + 60_000_000),
            "query.searchDepth": "20",
            "query.durationMin": "0.000001s",
        }
        with httpx.Client(base_url=observatory.query_url, timeout=10) as http:
            response = http.get(ROUTE, params=params)
            bad = http.get(ROUTE, params={"query.serviceName": "summaries-shop"})
            stored = http.get(f"/api/v3/traces/{trace_id}").json()
        otlp = [s for r in stored["result"]["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]
        assert response.status_code == 200, response.text
        (summary,) = response.json()["summaries"]
        check_order(summary)
        root = next(s for s in spans if s.parent is None)
        assert summary == {
            "traceId": trace_id,
            "rootServiceName": "summaries-shop",
            "rootOperationName": root.name,
            "minStartTimeUnixNano": min((s["startTimeUnixNano"] for s in otlp), key=int),
            "maxEndTimeUnixNano": max((s["endTimeUnixNano"] for s in otlp), key=int),
            "spanCount": 3,
            "errorSpanCount": 1,
            "services": [{"name": "summaries-shop", "spanCount": 3, "errorSpanCount": 1}],
        }
        assert int(summary["minStartTimeUnixNano"]) // 1000 == first // 1000
        print(f"summary of a real trace: {summary}")
        assert bad.status_code == 400
        assert bad.json()["error"]["message"] == REQUIRED
    finally:
        observatory.stop()
