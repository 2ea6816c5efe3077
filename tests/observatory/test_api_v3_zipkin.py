"""Jaeger api/v3 (OTLP-JSON) and the Zipkin v2 query API over the shared data set."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.observatory.test_api_jaeger import T0, TRACE_A, TRACE_B, TRACE_C

TRACE_D_SHORT = "1234567890abcdef"


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


def all_spans(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        span
        for resource in body["result"]["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]


# ---- api/v3 ------------------------------------------------------------------------------------


async def test_v3_services_and_operations(http: httpx.AsyncClient) -> None:
    body = (await http.get("/api/v3/services")).json()
    assert body == {"services": ["cart", "checkout", "currency", "frontend", "payment"]}
    body = (await http.get("/api/v3/operations", params={"service": "cart"})).json()
    assert body == {
        "operations": [{"name": "AddItem", "spanKind": "server"}, {"name": "GetCart", "spanKind": "server"}]
    }
    body = (
        await http.get("/api/v3/operations", params={"service": "checkout", "span_kind": "internal"})
    ).json()
    assert body == {"operations": [{"name": "prepare order", "spanKind": "internal"}]}


async def test_v3_trace_is_otlp_json(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/api/v3/traces/{TRACE_A}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"result"}
    groups = body["result"]["resourceSpans"]
    assert [g["resource"]["attributes"][0] for g in groups] == [
        {"key": "service.name", "value": {"stringValue": service}}
        for service in ("frontend", "checkout", "payment", "currency")
    ]
    frontend, checkout, payment, currency = groups
    assert frontend["resource"] == {
        "attributes": [
            {"key": "service.name", "value": {"stringValue": "frontend"}},
            {"key": "service.instance.id", "value": {"stringValue": "frontend-1"}},
            {"key": "host.name", "value": {"stringValue": "box"}},
            {"key": "deployment.count", "value": {"intValue": "3"}},
        ]
    }
    assert [s["scope"] for s in frontend["scopeSpans"]] == [{"name": "boutique.frontend", "version": "1.0"}]
    assert [s["scope"] for s in checkout["scopeSpans"]] == [{"name": "boutique.checkout"}]
    assert [s["scope"] for s in currency["scopeSpans"]] == [{}]
    root = frontend["scopeSpans"][0]["spans"][0]
    assert root == {
        "traceId": TRACE_A,
        "spanId": "a100000000000001",
        "name": "GET /checkout",
        "kind": 2,
        "startTimeUnixNano": str(T0 * 1000),
        "endTimeUnixNano": str((T0 + 50_000) * 1000),
        "attributes": [
            {"key": "http.method", "value": {"stringValue": "GET"}},
            {"key": "http.status_code", "value": {"intValue": "200"}},
            {"key": "http.url", "value": {"stringValue": "https://shop.example/checkout?x=1"}},
            {"key": "ratio", "value": {"doubleValue": 0.25}},
            {"key": "cached", "value": {"boolValue": False}},
            {"key": "raw", "value": {"bytesValue": "AAH/"}},
            {
                "key": "sizes",
                "value": {
                    "arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}, {"intValue": "3"}]}
                },
            },
            {
                "key": "headers",
                "value": {"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "b"}}]}},
            },
        ],
        "events": [
            {
                "timeUnixNano": str((T0 + 1000) * 1000),
                "name": "cache.miss",
                "attributes": [{"key": "key", "value": {"stringValue": "cart-1"}}],
            }
        ],
        "links": [],
        "status": {"code": 1},
    }
    charge = payment["scopeSpans"][0]["spans"][0]
    assert charge["parentSpanId"] == "a400000000000004"
    assert charge["status"] == {"code": 2, "message": "card declined"}
    assert charge["events"][0]["name"] == "exception"
    internal = next(s for s in checkout["scopeSpans"][0]["spans"] if s["name"] == "prepare order")
    assert internal["kind"] == 1
    assert internal["attributes"] == [{"key": "score", "value": {"doubleValue": "Infinity"}}]
    assert currency["scopeSpans"][0]["spans"][0]["status"] == {}


async def test_v3_links_and_missing_trace(http: httpx.AsyncClient) -> None:
    spans = all_spans((await http.get(f"/api/v3/traces/{TRACE_B}")).json())
    cart = next(s for s in spans if s["name"] == "GetCart")
    assert cart["links"] == [{"traceId": TRACE_A, "spanId": "a100000000000001", "attributes": []}]

    response = await http.get("/api/v3/traces/ffffffffffffffffffffffffffffffff")
    assert response.status_code == 404
    body = response.json()
    assert body["error"]["httpCode"] == 404
    assert "ffffffffffffffffffffffffffffffff" in body["error"]["message"]


async def test_v3_search(http: httpx.AsyncClient) -> None:
    params = {
        "query.service_name": "cart",
        "query.start_time_min": iso(T0 - 60_000_000),
        "query.start_time_max": iso(T0 + 3_000_000),
    }
    body = (await http.get("/api/v3/traces", params=params)).json()
    assert {s["traceId"] for s in all_spans(body)} == {TRACE_B, TRACE_C}
    services = [
        g["resource"]["attributes"][0]["value"]["stringValue"] for g in body["result"]["resourceSpans"]
    ]
    # Grouped by resource: frontend-2 (B), cart (B and C together), frontend-1 (C).
    assert sorted(services) == ["cart", "frontend", "frontend"]
    cart = next(
        g
        for g in body["result"]["resourceSpans"]
        if g["resource"]["attributes"][0]["value"]["stringValue"] == "cart"
    )
    assert len(cart["scopeSpans"]) == 1 and len(cart["scopeSpans"][0]["spans"]) == 2

    more = {"query.operation_name": "AddItem", "query.duration_min": "50ms", "query.duration_max": "1s"}
    body = (await http.get("/api/v3/traces", params={**params, **more})).json()
    assert {s["traceId"] for s in all_spans(body)} == {TRACE_C}
    body = (
        await http.get("/api/v3/traces", params={"query.attributes": json.dumps({"host.name": "box2"})})
    ).json()
    assert {s["traceId"] for s in all_spans(body)} == {TRACE_B}
    body = (await http.get("/api/v3/traces", params={"query.search_depth": "1"})).json()
    assert {s["traceId"] for s in all_spans(body)} == {TRACE_C}
    # Times with offsets and fractions.
    body = (
        await http.get("/api/v3/traces", params={"query.start_time_min": "2000-01-01T01:00:00.5+01:00"})
    ).json()
    assert len({s["traceId"] for s in all_spans(body)}) == 4
    body = (await http.get("/api/v3/traces", params={"query.service_name": "nobody"})).json()
    assert body == {"result": {"resourceSpans": []}}


BAD_V3 = [
    ("/api/v3/traces", {"query.start_time_min": "yesterday"}, "query.start_time_min"),
    ("/api/v3/traces", {"query.start_time_max": "2024-13-01T00:00:00Z"}, "query.start_time_max"),
    (
        "/api/v3/traces",
        {"query.start_time_min": "2024-01-02T00:00:00Z", "query.start_time_max": "2024-01-01T00:00:00Z"},
        "query.start_time_min",
    ),
    ("/api/v3/traces", {"query.duration_min": "fast"}, "query.duration_min"),
    ("/api/v3/traces", {"query.duration_max": "5"}, "query.duration_max"),
    ("/api/v3/traces", {"query.attributes": "a=b"}, "query.attributes"),
    ("/api/v3/traces", {"query.search_depth": "many"}, "query.search_depth"),
    ("/api/v3/traces", {"query.num_traces": "-3"}, "query.num_traces"),
    ("/api/v3/traces/not-hex", {}, "trace_id"),
    ("/api/v3/operations", {"span_kind": "weird"}, "span_kind"),
]


@pytest.mark.parametrize(("path", "params", "name"), BAD_V3)
async def test_v3_bad_parameters(
    http: httpx.AsyncClient, path: str, params: dict[str, str], name: str
) -> None:
    response = await http.get(path, params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["httpCode"] == 400
    assert f"'{name}'" in error["message"]


# ---- Zipkin v2 ---------------------------------------------------------------------------------


async def test_zipkin_services_and_span_names(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v2/services")).json() == [
        "cart",
        "checkout",
        "currency",
        "frontend",
        "payment",
    ]
    assert (await http.get("/api/v2/spans", params={"serviceName": "cart"})).json() == ["AddItem", "GetCart"]
    assert (await http.get("/api/v2/spans", params={"serviceName": "nobody"})).json() == []


async def test_zipkin_trace_shape(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/api/v2/trace/{TRACE_A}")
    assert response.status_code == 200
    spans = {s["id"]: s for s in response.json()}
    assert len(spans) == 8
    assert spans["a100000000000001"] == {
        "traceId": TRACE_A,
        "id": "a100000000000001",
        "name": "GET /checkout",
        "kind": "SERVER",
        "timestamp": T0,
        "duration": 50_000,
        "localEndpoint": {"serviceName": "frontend"},
        "annotations": [{"timestamp": T0 + 1000, "value": json.dumps({"cache.miss": {"key": "cart-1"}})}],
        "tags": {
            "http.method": "GET",
            "http.status_code": "200",
            "http.url": "https://shop.example/checkout?x=1",
            "ratio": "0.25",
            "cached": "false",
            "raw": "AAH/",
            "sizes": "[1, 2, 3]",
            "headers": '{"a": "b"}',
            "otel.scope.name": "boutique.frontend",
            "otel.scope.version": "1.0",
            "otel.status_code": "OK",
        },
    }
    assert spans["a200000000000002"]["kind"] == "CLIENT"
    assert spans["a200000000000002"]["parentId"] == "a100000000000001"
    assert spans["a200000000000002"]["remoteEndpoint"] == {"serviceName": "checkout"}
    assert spans["a500000000000005"]["tags"] == {
        "card.last4": "4242",
        "otel.scope.name": "boutique.payment",
        "otel.status_code": "ERROR",
        "error": "card declined",
    }
    assert "kind" not in spans["a800000000000008"]
    assert spans["a800000000000008"]["tags"]["score"] == "inf"
    assert spans["a700000000000007"]["annotations"] == []

    (cart_error,) = [s for s in (await http.get(f"/api/v2/trace/{TRACE_C}")).json() if s["name"] == "AddItem"]
    assert cart_error["tags"] == {
        "otel.scope.name": "boutique.cart",
        "otel.status_code": "ERROR",
        "error": "true",
    }

    old = (await http.get(f"/api/v2/trace/{TRACE_D_SHORT}")).json()
    assert {s["traceId"] for s in old} == {TRACE_D_SHORT}

    response = await http.get("/api/v2/trace/ffffffffffffffff")
    assert response.status_code == 404


async def test_zipkin_search(http: httpx.AsyncClient) -> None:
    async def ids(params: dict[str, Any]) -> list[str]:
        response = await http.get("/api/v2/traces", params=params)
        assert response.status_code == 200, response.text
        traces = response.json()
        assert all(isinstance(t, list) and t for t in traces)
        return [t[0]["traceId"] for t in traces]

    assert await ids({"serviceName": "cart"}) == [TRACE_C, TRACE_B, TRACE_D_SHORT]
    assert await ids({"serviceName": "frontend", "spanName": "GET /cart"}) == [TRACE_B, TRACE_D_SHORT]
    assert await ids({"serviceName": "frontend", "spanName": "all", "limit": 2}) == [TRACE_C, TRACE_B]
    assert await ids({"annotationQuery": "error"}) == [TRACE_C, TRACE_A]
    assert await ids({"annotationQuery": "http.method=POST"}) == [TRACE_C]
    assert await ids({"annotationQuery": "http.method=GET and http.status_code=200"}) == [TRACE_B, TRACE_A]
    assert await ids({"annotationQuery": "card.last4"}) == [TRACE_A]
    assert await ids({"minDuration": 100_000}) == [TRACE_C]
    assert await ids({"serviceName": "cart", "maxDuration": 4000}) == [TRACE_D_SHORT]
    # endTs and lookback in ms: a one-hour window ending at T0 + 1.5 s holds A and B.
    assert await ids({"endTs": (T0 + 1_500_000) // 1000, "lookback": 3_600_000}) == [TRACE_B, TRACE_A]
    many = (await http.get("/api/v2/traceMany", params={"traceIds": f"{TRACE_B},{TRACE_C}"})).json()
    assert [t[0]["traceId"] for t in many] == [TRACE_B, TRACE_C]


async def test_zipkin_dependencies(http: httpx.AsyncClient) -> None:
    body = (
        await http.get("/api/v2/dependencies", params={"endTs": (T0 + 3_000_000) // 1000, "lookback": 60_000})
    ).json()
    assert body == [
        {"parent": "checkout", "child": "currency", "callCount": 1, "errorCount": 0},
        {"parent": "checkout", "child": "payment", "callCount": 1, "errorCount": 1},
        {"parent": "frontend", "child": "cart", "callCount": 2, "errorCount": 1},
        {"parent": "frontend", "child": "checkout", "callCount": 1, "errorCount": 0},
    ]
    body = (await http.get("/api/v2/dependencies")).json()
    assert {"parent": "frontend", "child": "cart", "callCount": 3, "errorCount": 1} in body


BAD_ZIPKIN = [
    ("/api/v2/spans", {}, "serviceName"),
    ("/api/v2/traces", {"minDuration": "1ms"}, "minDuration"),
    ("/api/v2/traces", {"maxDuration": "-1"}, "maxDuration"),
    ("/api/v2/traces", {"limit": "x"}, "limit"),
    ("/api/v2/traces", {"endTs": "now"}, "endTs"),
    ("/api/v2/traces", {"endTs": str(2**60)}, "endTs"),
    ("/api/v2/traces", {"lookback": "1h"}, "lookback"),
    ("/api/v2/traces", {"annotationQuery": "error and =x"}, "annotationQuery"),
    ("/api/v2/trace/zz", {}, "traceId"),
    ("/api/v2/traceMany", {"traceIds": "abc,xyz"}, "traceIds"),
    ("/api/v2/traceMany", {}, "traceIds"),
    ("/api/v2/dependencies", {"endTs": "x"}, "endTs"),
]


@pytest.mark.parametrize(("path", "params", "name"), BAD_ZIPKIN)
async def test_zipkin_bad_parameters(
    http: httpx.AsyncClient, path: str, params: dict[str, str], name: str
) -> None:
    response = await http.get(path, params=params)
    assert response.status_code == 400, response.text
    assert f"'{name}'" in response.json()["errors"][0]["msg"]
