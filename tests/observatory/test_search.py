"""Trace search through `GET /api/traces`: every condition, alone and together, over the shared data set."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.observatory.test_api_jaeger import T0, TRACE_A, TRACE_B, TRACE_C, envelope_ok

TRACE_D_SHORT = "1234567890abcdef"  # trace D as Jaeger prints it


async def found(http: httpx.AsyncClient, params: Any) -> list[str]:
    """Trace ids the search returns, in order."""
    response = await http.get("/api/traces", params=params)
    assert response.status_code == 200, response.text
    return [trace["traceID"] for trace in envelope_ok(response.json())]


async def test_by_service_newest_first(http: httpx.AsyncClient) -> None:
    assert await found(http, {"service": "frontend"}) == [TRACE_C, TRACE_B, TRACE_A, TRACE_D_SHORT]
    assert await found(http, {"service": "cart"}) == [TRACE_C, TRACE_B, TRACE_D_SHORT]
    assert await found(http, {"service": "payment"}) == [TRACE_A]
    assert await found(http, {"service": "nobody"}) == []


async def test_without_service_searches_everything(http: httpx.AsyncClient) -> None:
    assert await found(http, {}) == [TRACE_C, TRACE_B, TRACE_A, TRACE_D_SHORT]
    assert await found(http, {"operation": "Charge"}) == [TRACE_A]


async def test_search_returns_whole_traces(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/traces", params={"service": "payment"})
    (trace,) = envelope_ok(response.json())
    assert len(trace["spans"]) == 8
    assert {p["serviceName"] for p in trace["processes"].values()} == {
        "frontend",
        "checkout",
        "payment",
        "currency",
    }


async def test_by_operation(http: httpx.AsyncClient) -> None:
    assert await found(http, {"service": "frontend", "operation": "GET /cart"}) == [TRACE_B, TRACE_D_SHORT]
    assert await found(http, {"service": "cart", "operation": "GET /cart"}) == []


async def test_jaeger_tags_json_and_tag_pairs(http: httpx.AsyncClient) -> None:
    assert await found(http, {"tags": json.dumps({"http.method": "POST"})}) == [TRACE_C]
    assert await found(http, {"tags": json.dumps({"http.method": "GET", "http.status_code": "200"})}) == [
        TRACE_B,
        TRACE_A,
    ]
    # Numbers and booleans in the JSON map compare by their text.
    assert await found(http, {"tags": json.dumps({"http.status_code": 500})}) == [TRACE_C]
    assert await found(http, {"tags": json.dumps({"cached": False})}) == [TRACE_A]
    assert await found(http, [("tag", "http.method:GET")]) == [TRACE_B, TRACE_A, TRACE_D_SHORT]
    assert await found(http, [("tag", "http.method:GET"), ("tag", "http.status_code:200")]) == [
        TRACE_B,
        TRACE_A,
    ]
    # The value may hold colons: only the first one splits.
    assert await found(http, [("tag", "http.url:https://shop.example/checkout?x=1")]) == [TRACE_A]
    # Special tags Jaeger derives from OTLP fields.
    assert await found(http, {"tags": json.dumps({"error": "true"})}) == [TRACE_C, TRACE_A]
    assert await found(http, {"service": "cart", "tags": json.dumps({"span.kind": "server"})}) == [
        TRACE_C,
        TRACE_B,
        TRACE_D_SHORT,
    ]


async def test_tag_query_operators(http: httpx.AsyncClient) -> None:
    assert await found(http, {"tagQuery": "http.method=POST"}) == [TRACE_C]
    assert await found(http, {"tagQuery": "http.method!=GET"}) == [TRACE_C]
    assert await found(http, {"tagQuery": "http.url^=https://shop"}) == [TRACE_A]
    assert await found(http, {"tagQuery": "http.url^=http://"}) == []
    assert await found(http, {"tagQuery": r"http.url~=checkout\?x=\d$"}) == [TRACE_A]
    assert await found(http, {"tagQuery": "http.method~=^(GET|POST)$"}) == [
        TRACE_C,
        TRACE_B,
        TRACE_A,
        TRACE_D_SHORT,
    ]
    # Resource attributes and event attributes are searched too.
    assert await found(http, {"tagQuery": "host.name=box2"}) == [TRACE_B]
    assert await found(http, {"tagQuery": "exception.type=CardDeclined"}) == [TRACE_A]
    # Conditions combine: one span must meet them all.
    both = [("tagQuery", "http.method=GET"), ("tagQuery", "host.name^=box2")]
    assert await found(http, both) == [TRACE_B]
    assert await found(http, [("tagQuery", "http.method=POST"), ("tagQuery", "host.name=box2")]) == []


async def test_durations(http: httpx.AsyncClient) -> None:
    assert await found(http, {"minDuration": "100ms"}) == [TRACE_C]
    assert await found(http, {"minDuration": "0.1s"}) == [TRACE_C]
    assert await found(http, {"minDuration": "100001us"}) == [TRACE_C]
    assert await found(http, {"service": "cart", "maxDuration": "4ms"}) == [TRACE_D_SHORT]
    assert await found(http, {"minDuration": "30ms", "maxDuration": "60ms"}) == [TRACE_A]
    assert await found(http, {"minDuration": "1m"}) == []
    assert await found(http, {"minDuration": "1h2m3.5s"}) == []


async def test_time_window_and_lookback(http: httpx.AsyncClient) -> None:
    assert await found(http, {"start": T0 + 500_000}) == [TRACE_C, TRACE_B]
    assert await found(http, {"start": T0 - 3_600_000_000, "end": T0 + 500_000}) == [TRACE_A]
    assert await found(http, {"end": T0 - 1}) == [TRACE_D_SHORT]
    # One hour back from now leaves out D (two hours and ten minutes old); `custom` defers to start/end.
    assert await found(http, {"lookback": "1h"}) == [TRACE_C, TRACE_B, TRACE_A]
    assert await found(http, {"lookback": "2d"}) == [TRACE_C, TRACE_B, TRACE_A, TRACE_D_SHORT]
    assert await found(http, {"lookback": "custom", "start": T0 + 1_500_000}) == [TRACE_C]
    # An explicit start wins over lookback.
    assert await found(http, {"lookback": "1h", "start": 0, "end": T0 - 1}) == [TRACE_D_SHORT]


async def test_limit(http: httpx.AsyncClient) -> None:
    assert await found(http, {"limit": 2}) == [TRACE_C, TRACE_B]
    assert await found(http, {"limit": 1, "tagQuery": "http.method!=POST"}) == [TRACE_B]
    assert await found(http, {"limit": 0}) == [TRACE_C, TRACE_B, TRACE_A, TRACE_D_SHORT]
    assert await found(http, {"limit": 100000}) == [TRACE_C, TRACE_B, TRACE_A, TRACE_D_SHORT]


async def test_errors_instance_kind_and_sort(http: httpx.AsyncClient) -> None:
    assert await found(http, {"errors": "true"}) == [TRACE_C, TRACE_A]
    assert await found(http, {"errors": "false"}) == [TRACE_C, TRACE_B, TRACE_A, TRACE_D_SHORT]
    assert await found(http, {"errors": "true", "service": "payment"}) == [TRACE_A]
    assert await found(http, {"instance": "frontend-2"}) == [TRACE_B]
    assert await found(http, {"instance": "frontend-1", "operation": "GET /cart"}) == [TRACE_D_SHORT]
    assert await found(http, {"spanKind": "internal"}) == [TRACE_A]
    assert await found(http, {"sortBy": "duration"}) == [TRACE_C, TRACE_A, TRACE_B, TRACE_D_SHORT]
    assert await found(http, {"sortBy": "duration", "service": "cart"}) == [TRACE_C, TRACE_B, TRACE_D_SHORT]
    assert await found(http, {"sortBy": "duration", "tagQuery": "http.method^=G"}) == [
        TRACE_A,
        TRACE_B,
        TRACE_D_SHORT,
    ]
