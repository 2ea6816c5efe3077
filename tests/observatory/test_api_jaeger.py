"""The Jaeger v1 query API over a real DuckDB store: exact JSON shapes, dependencies, metrics, bad parameters.

Also holds the synthetic data set the other API tests share (`build_store`, `client`, ids, `T0`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from starlette.applications import Starlette

from boutique.observatory.api import query_routes
from boutique.observatory.otlp.values import to_key_values
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.duckdb_store import DuckDBStore
from boutique.observatory.ui import ui_routes

# ---- the data set ------------------------------------------------------------------------------

MS = 1000
T0 = (time.time_ns() // 1000 // 60_000_000 - 10) * 60_000_000  # a whole minute, ten minutes ago (µs)

TRACE_A = "0af7651916cd43dd8448eb211c80319c"  # checkout: frontend → checkout → payment, currency
TRACE_B = "5b8efff798038103d269b633813fc60c"  # cart read, links to A
TRACE_C = "c1a5e2b7a9d04f3e8b6c7d8e9f0a1b2c"  # failing cart write
TRACE_D = "00000000000000001234567890abcdef"  # an old 64-bit trace, two hours earlier

FRONTEND_1 = {
    "service.name": "frontend",
    "service.instance.id": "frontend-1",
    "host.name": "box",
    "deployment.count": 3,
}
FRONTEND_2 = {"service.name": "frontend", "service.instance.id": "frontend-2", "host.name": "box2"}
CHECKOUT = {"service.name": "checkout", "service.instance.id": "checkout-1"}
PAYMENT = {"service.name": "payment"}
CURRENCY = {"service.name": "currency"}
CART = {"service.name": "cart", "service.instance.id": "cart-1"}

A1_ATTRIBUTES: dict[str, Any] = {
    "http.method": "GET",
    "http.status_code": 200,
    "http.url": "https://shop.example/checkout?x=1",
    "ratio": 0.25,
    "cached": False,
    "raw": b"\x00\x01\xff",
    "sizes": [1, 2, 3],
    "headers": {"a": "b"},
}


@dataclass
class S:
    """A span to generate (times in µs)."""

    trace: str
    span: str
    parent: str
    name: str
    kind: int
    start: int
    duration: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    message: str = ""
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)

    def otlp(self) -> OtlpSpan:
        """The OTLP message."""
        span = OtlpSpan(
            trace_id=bytes.fromhex(self.trace),
            span_id=bytes.fromhex(self.span),
            parent_span_id=bytes.fromhex(self.parent),
            name=self.name,
            kind=self.kind,  # type: ignore[arg-type]
            start_time_unix_nano=self.start * 1000,
            end_time_unix_nano=(self.start + self.duration) * 1000,
            attributes=to_key_values(self.attributes),
            status=Status(code=self.status, message=self.message),  # type: ignore[arg-type]
        )
        for at, name, attributes in self.events:
            span.events.add(time_unix_nano=at * 1000, name=name, attributes=to_key_values(attributes))
        for trace, span_id in self.links:
            span.links.add(trace_id=bytes.fromhex(trace), span_id=bytes.fromhex(span_id))
        return span


Group = tuple[dict[str, Any], tuple[str, str], list[S]]
SERVER, CLIENT, INTERNAL = 2, 3, 1
A: list[Group] = [
    (
        FRONTEND_1,
        ("boutique.frontend", "1.0"),
        [
            S(TRACE_A, "a100000000000001", "", "GET /checkout", SERVER, T0, 50 * MS, A1_ATTRIBUTES, 1,
              events=[(T0 + 1 * MS, "cache.miss", {"key": "cart-1"})]),
            S(TRACE_A, "a200000000000002", "a100000000000001", "checkout/PlaceOrder", CLIENT, T0 + 2 * MS, 40 * MS,
              {"rpc.system": "grpc", "peer.service": "checkout"}),
        ],
    ),
    (
        CHECKOUT,
        ("boutique.checkout", ""),
        [
            S(TRACE_A, "a300000000000003", "a200000000000002", "PlaceOrder", SERVER, T0 + 3 * MS, 38 * MS),
            S(TRACE_A, "a400000000000004", "a300000000000003", "payment/Charge", CLIENT, T0 + 5 * MS, 20 * MS,
              status=2, message="card declined"),
            S(TRACE_A, "a600000000000006", "a300000000000003", "currency/Convert", CLIENT, T0 + 26 * MS, 5 * MS),
            S(TRACE_A, "a800000000000008", "a300000000000003", "prepare order", INTERNAL, T0 + 32 * MS, 2 * MS,
              {"score": float("inf")}),
        ],
    ),
    (
        PAYMENT,
        ("boutique.payment", ""),
        [
            S(TRACE_A, "a500000000000005", "a400000000000004", "Charge", SERVER, T0 + 6 * MS, 18 * MS,
              {"card.last4": "4242"}, 2, "card declined",
              events=[(T0 + 20 * MS, "exception", {"exception.type": "CardDeclined", "exception.message": "no"})]),
        ],
    ),
    (
        CURRENCY,
        ("", ""),
        [S(TRACE_A, "a700000000000007", "a600000000000006", "Convert", SERVER, T0 + 27 * MS, 3 * MS)],
    ),
]  # fmt: skip
B: list[Group] = [
    (
        FRONTEND_2,
        ("boutique.frontend", "1.0"),
        [
            S(TRACE_B, "b100000000000001", "", "GET /cart", SERVER, T0 + 1000 * MS, 10 * MS,
              {"http.method": "GET", "http.status_code": 200}),
            S(TRACE_B, "b200000000000002", "b100000000000001", "cart/GetCart", CLIENT, T0 + 1001 * MS, 8 * MS),
        ],
    ),
    (
        CART,
        ("boutique.cart", ""),
        [
            S(TRACE_B, "b300000000000003", "b200000000000002", "GetCart", SERVER, T0 + 1002 * MS, 6 * MS,
              links=[(TRACE_A, "a100000000000001")]),
        ],
    ),
]  # fmt: skip
C: list[Group] = [
    (
        FRONTEND_1,
        ("boutique.frontend", "1.0"),
        [
            S(TRACE_C, "c100000000000001", "", "POST /cart", SERVER, T0 + 2000 * MS, 120 * MS,
              {"http.method": "POST", "http.status_code": 500}, 2, "boom"),
            S(TRACE_C, "c200000000000002", "c100000000000001", "cart/AddItem", CLIENT, T0 + 2001 * MS, 100 * MS),
            S(TRACE_C, "c400000000000004", "c100000000000001", "render", 0, T0 + 2102 * MS, 3 * MS),
        ],
    ),
    (
        CART,
        ("boutique.cart", ""),
        [S(TRACE_C, "c300000000000003", "c200000000000002", "AddItem", SERVER, T0 + 2002 * MS, 90 * MS, status=2)],
    ),
]  # fmt: skip
D0 = T0 - 2 * 3600 * 1_000_000
D: list[Group] = [
    (
        FRONTEND_1,
        ("boutique.frontend", "1.0"),
        [
            S(TRACE_D, "d100000000000001", "", "GET /cart", SERVER, D0, 5 * MS, {"http.method": "GET"}),
            S(TRACE_D, "d200000000000002", "d100000000000001", "cart/GetCart", CLIENT, D0 + 1 * MS, 4 * MS),
        ],
    ),
    (CART, ("boutique.cart", ""), [S(TRACE_D, "d300000000000003", "d200000000000002", "GetCart", SERVER, D0 + MS, 3 * MS)]),
]  # fmt: skip


def request(groups: Sequence[Group]) -> ExportTraceServiceRequest:
    """An export request with one resourceSpans (one scope) per group."""
    out = ExportTraceServiceRequest()
    for resource, (scope_name, scope_version), spans in groups:
        resource_spans = out.resource_spans.add(resource=Resource(attributes=to_key_values(resource)))
        scope_spans = resource_spans.scope_spans.add(
            scope=InstrumentationScope(name=scope_name, version=scope_version)
        )
        scope_spans.spans.extend(s.otlp() for s in spans)
    return out


def build_store(tmp_path: Path) -> DuckDBStore:
    """A DuckDB store holding traces A to D, each sent in its own request."""
    store = DuckDBStore(tmp_path / "observatory.duckdb")
    for groups in (A, B, C, D):
        store.append(decode(request(groups).SerializeToString()))
    return store


@asynccontextmanager
async def client(store: DuckDBStore) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to what the query port serves over the store: the query API and the UI."""
    app = Starlette(routes=[*query_routes(store), *ui_routes(store)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


def rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope_ok(body: dict[str, Any]) -> Any:
    """Check the Jaeger envelope and return its data."""
    assert set(body) == {"data", "total", "limit", "offset", "errors"}
    assert body["errors"] is None
    assert body["limit"] == 0 and body["offset"] == 0
    return body["data"]


# ---- services and operations -------------------------------------------------------------------


async def test_services_and_operations(http: httpx.AsyncClient) -> None:
    body = (await http.get("/api/services")).json()
    assert envelope_ok(body) == ["cart", "checkout", "currency", "frontend", "payment"]
    assert body["total"] == 5

    body = (await http.get("/api/services/frontend/operations")).json()
    assert envelope_ok(body) == sorted(
        [
            "GET /checkout",
            "GET /cart",
            "POST /cart",
            "checkout/PlaceOrder",
            "cart/GetCart",
            "cart/AddItem",
            "render",
        ]
    )

    data = envelope_ok((await http.get("/api/operations", params={"service": "frontend"})).json())
    assert {"name": "render", "spanKind": ""} in data
    assert {"name": "GET /cart", "spanKind": "server"} in data
    assert {"name": "cart/GetCart", "spanKind": "client"} in data
    assert len(data) == 7

    data = envelope_ok(
        (await http.get("/api/operations", params={"service": "checkout", "spanKind": "client"})).json()
    )
    assert data == [
        {"name": "currency/Convert", "spanKind": "client"},
        {"name": "payment/Charge", "spanKind": "client"},
    ]
    everywhere = envelope_ok((await http.get("/api/operations", params={"spanKind": "internal"})).json())
    assert everywhere == [{"name": "prepare order", "spanKind": "internal"}]
    assert envelope_ok((await http.get("/api/services/nobody/operations")).json()) == []


# ---- the trace shape ---------------------------------------------------------------------------


async def test_trace_by_id_has_the_jaeger_shape(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/api/traces/{TRACE_A}")
    assert response.status_code == 200
    (trace,) = envelope_ok(response.json())
    assert set(trace) == {"traceID", "spans", "processes", "warnings"}
    assert trace["traceID"] == TRACE_A
    assert trace["warnings"] is None
    assert [s["spanID"] for s in trace["spans"]] == [
        f"a{i}0000000000000{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8)
    ]

    assert trace["processes"] == {
        "p1": {
            "serviceName": "frontend",
            "tags": [
                {"key": "service.instance.id", "type": "string", "value": "frontend-1"},
                {"key": "host.name", "type": "string", "value": "box"},
                {"key": "deployment.count", "type": "int64", "value": 3},
            ],
        },
        "p2": {
            "serviceName": "checkout",
            "tags": [{"key": "service.instance.id", "type": "string", "value": "checkout-1"}],
        },
        "p3": {"serviceName": "payment", "tags": []},
        "p4": {"serviceName": "currency", "tags": []},
    }
    spans = {s["spanID"]: s for s in trace["spans"]}
    assert spans["a100000000000001"] == {
        "traceID": TRACE_A,
        "spanID": "a100000000000001",
        "operationName": "GET /checkout",
        "references": [],
        "flags": 1,
        "startTime": T0,
        "duration": 50_000,
        "tags": [
            {"key": "http.method", "type": "string", "value": "GET"},
            {"key": "http.status_code", "type": "int64", "value": 200},
            {"key": "http.url", "type": "string", "value": "https://shop.example/checkout?x=1"},
            {"key": "ratio", "type": "float64", "value": 0.25},
            {"key": "cached", "type": "bool", "value": False},
            {"key": "raw", "type": "binary", "value": "AAH/"},
            {"key": "sizes", "type": "string", "value": "[1, 2, 3]"},
            {"key": "headers", "type": "string", "value": '{"a": "b"}'},
            {"key": "otel.scope.name", "type": "string", "value": "boutique.frontend"},
            {"key": "otel.scope.version", "type": "string", "value": "1.0"},
            {"key": "span.kind", "type": "string", "value": "server"},
            {"key": "otel.status_code", "type": "string", "value": "OK"},
        ],
        "logs": [
            {
                "timestamp": T0 + 1000,
                "fields": [
                    {"key": "event", "type": "string", "value": "cache.miss"},
                    {"key": "key", "type": "string", "value": "cart-1"},
                ],
            }
        ],
        "processID": "p1",
        "warnings": None,
    }
    payment = spans["a500000000000005"]
    assert payment["references"] == [
        {"refType": "CHILD_OF", "traceID": TRACE_A, "spanID": "a400000000000004"}
    ]
    assert payment["processID"] == "p3"
    assert payment["tags"] == [
        {"key": "card.last4", "type": "string", "value": "4242"},
        {"key": "otel.scope.name", "type": "string", "value": "boutique.payment"},
        {"key": "span.kind", "type": "string", "value": "server"},
        {"key": "otel.status_code", "type": "string", "value": "ERROR"},
        {"key": "otel.status_description", "type": "string", "value": "card declined"},
        {"key": "error", "type": "bool", "value": True},
    ]
    assert payment["logs"][0]["fields"] == [
        {"key": "event", "type": "string", "value": "exception"},
        {"key": "exception.type", "type": "string", "value": "CardDeclined"},
        {"key": "exception.message", "type": "string", "value": "no"},
    ]
    internal = spans["a800000000000008"]
    assert {"key": "span.kind", "type": "string", "value": "internal"} in internal["tags"]
    assert {"key": "score", "type": "string", "value": "inf"} in internal["tags"]
    assert spans["a700000000000007"]["tags"] == [{"key": "span.kind", "type": "string", "value": "server"}]


async def test_links_processes_and_short_ids(http: httpx.AsyncClient) -> None:
    (trace,) = envelope_ok((await http.get(f"/api/traces/{TRACE_B}")).json())
    cart = next(s for s in trace["spans"] if s["spanID"] == "b300000000000003")
    assert cart["references"] == [
        {"refType": "CHILD_OF", "traceID": TRACE_B, "spanID": "b200000000000002"},
        {"refType": "FOLLOWS_FROM", "traceID": TRACE_A, "spanID": "a100000000000001"},
    ]
    assert trace["processes"]["p1"]["tags"][0] == {
        "key": "service.instance.id",
        "type": "string",
        "value": "frontend-2",
    }
    assert [s["processID"] for s in trace["spans"]] == ["p1", "p1", "p2"]

    # A trace id whose high half is zero is shown with 16 digits and found by 16 or 32 digits.
    for asked in ("1234567890abcdef", TRACE_D, "01234567890ABCDEF"):
        (old,) = envelope_ok((await http.get(f"/api/traces/{asked}")).json())
        assert old["traceID"] == "1234567890abcdef"
        assert {s["traceID"] for s in old["spans"]} == {"1234567890abcdef"}


async def test_missing_trace_is_404_with_the_envelope(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/traces/ffffffffffffffffffffffffffffffff")
    assert response.status_code == 404
    body = response.json()
    assert body["data"] is None and body["total"] == 0
    assert body["errors"][0]["code"] == 404
    assert "ffffffffffffffffffffffffffffffff" in body["errors"][0]["msg"]


async def test_traces_by_trace_id_parameter(http: httpx.AsyncClient) -> None:
    data = envelope_ok(
        (await http.get("/api/traces", params=[("traceID", TRACE_C), ("traceID", TRACE_B)])).json()
    )
    assert [t["traceID"] for t in data] == [TRACE_C, TRACE_B]


# ---- dependencies ------------------------------------------------------------------------------


async def test_dependencies_counted_by_hand(http: httpx.AsyncClient) -> None:
    end_ms = (T0 + 3_600_000_000) // 1000
    # Last hour before end: traces A, B, C (D is two hours old).
    data = envelope_ok(
        (await http.get("/api/dependencies", params={"endTs": end_ms, "lookback": 2 * 3_600_000 - 1})).json()
    )
    assert data == [
        {"parent": "checkout", "child": "currency", "callCount": 1, "errorCount": 0},
        {"parent": "checkout", "child": "payment", "callCount": 1, "errorCount": 1},
        {"parent": "frontend", "child": "cart", "callCount": 2, "errorCount": 1},
        {"parent": "frontend", "child": "checkout", "callCount": 1, "errorCount": 0},
    ]
    # Four hours back includes D: one more frontend → cart call.
    data = envelope_ok(
        (await http.get("/api/dependencies", params={"endTs": end_ms, "lookback": 4 * 3_600_000})).json()
    )
    assert {"parent": "frontend", "child": "cart", "callCount": 3, "errorCount": 1} in data
    # Defaults: now, one day back.
    data = envelope_ok((await http.get("/api/dependencies")).json())
    assert {"parent": "frontend", "child": "cart", "callCount": 3, "errorCount": 1} in data
    assert len(data) == 4
    # A window before everything.
    assert (
        envelope_ok((await http.get("/api/dependencies", params={"endTs": 1000, "lookback": 1000})).json())
        == []
    )


# ---- metrics -----------------------------------------------------------------------------------


def metric_params(**extra: Any) -> dict[str, Any]:
    # Two one-minute steps ending a minute after T0: the steps end at T0 and T0 + 60 s.
    return {"service": "frontend", "endTs": T0 // 1000 + 60_000, "lookback": 120_000, "step": 60_000, **extra}


async def test_call_rate_metric_family(http: httpx.AsyncClient) -> None:
    body = (await http.get("/api/metrics/calls", params=metric_params(ratePer=60_000))).json()
    assert body == {
        "name": "service_call_rate",
        "type": "GAUGE",
        "help": "calls/sec, grouped by service",
        "metrics": [
            {
                "labels": [{"name": "service_name", "value": "frontend"}],
                "metricPoints": [
                    {"gaugeValue": {"doubleValue": 0.0}, "timestamp": rfc3339(T0)},
                    # Three frontend server spans (A, B, C roots) in the minute after T0.
                    {"gaugeValue": {"doubleValue": 3 / 60}, "timestamp": rfc3339(T0 + 60_000_000)},
                ],
            }
        ],
    }
    # A two-minute rate window halves the rate.
    body = (await http.get("/api/metrics/calls", params=metric_params(ratePer=120_000))).json()
    points = body["metrics"][0]["metricPoints"]
    assert [pt["gaugeValue"]["doubleValue"] for pt in points] == [0.0, 3 / 120]
    # Client spans instead of server spans: A2, B2, C2.
    body = (
        await http.get("/api/metrics/calls", params=metric_params(ratePer=60_000, spanKind="client"))
    ).json()
    assert body["metrics"][0]["metricPoints"][1]["gaugeValue"]["doubleValue"] == 3 / 60


async def test_error_rate_and_latency_metrics(http: httpx.AsyncClient) -> None:
    body = (await http.get("/api/metrics/errors", params=metric_params(ratePer=60_000))).json()
    assert body["name"] == "service_error_rate"
    assert body["metrics"][0]["metricPoints"] == [
        {"gaugeValue": {"doubleValue": 1 / 3}, "timestamp": rfc3339(T0 + 60_000_000)}
    ]
    body = (await http.get("/api/metrics/latencies", params=metric_params(quantile=0.5))).json()
    assert body["name"] == "service_latencies"
    assert body["help"] == "0.50th quantile latency, grouped by service"
    # Median of 50, 10 and 120 ms.
    assert body["metrics"][0]["metricPoints"] == [
        {"gaugeValue": {"doubleValue": 50.0}, "timestamp": rfc3339(T0 + 60_000_000)}
    ]


async def test_metrics_grouped_by_operation_and_several_services(http: httpx.AsyncClient) -> None:
    params = [*metric_params(ratePer=60_000, groupByOperation="true").items(), ("service", "cart")]
    body = (await http.get("/api/metrics/errors", params=params)).json()
    assert body["name"] == "service_operation_error_rate"
    assert body["help"].endswith("grouped by service & operation")
    figures = {
        tuple(label["value"] for label in m["labels"]): [
            pt["gaugeValue"]["doubleValue"] for pt in m["metricPoints"]
        ]
        for m in body["metrics"]
    }
    assert figures == {
        ("cart", "AddItem"): [1.0],
        ("cart", "GetCart"): [0.0],
        ("frontend", "GET /cart"): [0.0],
        ("frontend", "GET /checkout"): [0.0],
        ("frontend", "POST /cart"): [1.0],
    }
    assert [label["name"] for label in body["metrics"][0]["labels"]] == ["service_name", "operation"]


async def test_minstep(http: httpx.AsyncClient) -> None:
    assert envelope_ok((await http.get("/api/metrics/minstep")).json()) == 1000


# ---- bad parameters ----------------------------------------------------------------------------

BAD_V1 = [
    ("/api/traces", {"minDuration": "abc"}, "minDuration"),
    ("/api/traces", {"minDuration": "10"}, "minDuration"),
    ("/api/traces", {"maxDuration": "-1s"}, "maxDuration"),
    ("/api/traces", {"maxDuration": "1x"}, "maxDuration"),
    ("/api/traces", {"minDuration": "2s", "maxDuration": "1s"}, "maxDuration"),
    ("/api/traces", {"limit": "ten"}, "limit"),
    ("/api/traces", {"limit": "-1"}, "limit"),
    ("/api/traces", {"tags": "{bad"}, "tags"),
    ("/api/traces", {"tags": "[1, 2]"}, "tags"),
    ("/api/traces", {"tags": '{"a": {"b": 1}}'}, "tags"),
    ("/api/traces", {"tag": "nocolon"}, "tag"),
    ("/api/traces", {"tagQuery": "k~=("}, "tagQuery"),
    ("/api/traces", {"tagQuery": "no-operator"}, "tagQuery"),
    ("/api/traces", {"tagQuery": "=value"}, "tagQuery"),
    ("/api/traces", {"start": "yesterday"}, "start"),
    ("/api/traces", {"end": "1.5"}, "end"),
    ("/api/traces", {"end": "99999999999999999999"}, "end"),
    ("/api/traces", {"minDuration": "9999999999999999h"}, "minDuration"),
    ("/api/traces", {"start": "2000", "end": "1000"}, "start"),
    ("/api/traces", {"lookback": "forever"}, "lookback"),
    ("/api/traces", {"sortBy": "name"}, "sortBy"),
    ("/api/traces", {"errors": "maybe"}, "errors"),
    ("/api/traces", {"spanKind": "sideways"}, "spanKind"),
    ("/api/traces", {"traceID": "xyz"}, "traceID"),
    ("/api/traces/xyz", {}, "traceID"),
    ("/api/traces/" + "a" * 33, {}, "traceID"),
    ("/api/operations", {"spanKind": "sideways"}, "spanKind"),
    ("/api/dependencies", {"endTs": "now"}, "endTs"),
    ("/api/dependencies", {"lookback": "-5"}, "lookback"),
    ("/api/metrics/bogus", {"service": "frontend"}, "metric"),
    ("/api/metrics/calls", {}, "service"),
    ("/api/metrics/latencies", {"service": "frontend"}, "quantile"),
    ("/api/metrics/latencies", {"service": "frontend", "quantile": "1.5"}, "quantile"),
    ("/api/metrics/latencies", {"service": "frontend", "quantile": "0"}, "quantile"),
    ("/api/metrics/latencies", {"service": "frontend", "quantile": "high"}, "quantile"),
    ("/api/metrics/calls", {"service": "frontend", "endTs": "soon"}, "endTs"),
    ("/api/metrics/calls", {"service": "frontend", "lookback": "0"}, "lookback"),
    ("/api/metrics/calls", {"service": "frontend", "step": "0"}, "step"),
    ("/api/metrics/calls", {"service": "frontend", "step": "1", "lookback": "86400000"}, "step"),
    ("/api/metrics/calls", {"service": "frontend", "ratePer": "x"}, "ratePer"),
    ("/api/metrics/calls", {"service": "frontend", "spanKind": "up"}, "spanKind"),
    ("/api/metrics/calls", {"service": "frontend", "groupByOperation": "perhaps"}, "groupByOperation"),
]


@pytest.mark.parametrize(("path", "params", "name"), BAD_V1)
async def test_bad_parameters_are_400_naming_the_parameter(
    http: httpx.AsyncClient, path: str, params: dict[str, str], name: str
) -> None:
    response = await http.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["data"] is None and body["total"] == 0 and body["limit"] == 0 and body["offset"] == 0
    assert body["errors"][0]["code"] == 400
    assert f"'{name}'" in body["errors"][0]["msg"]


def test_clock_skew_between_services_is_shown_not_corrected() -> None:
    from boutique.observatory.api.jaeger import jaeger_trace
    from boutique.observatory.model import Span as StoredSpan

    parent = StoredSpan(
        "a" * 32, "1" * 16, "", "frontend", "GET /", 3, start_us=1000, duration_us=100, status=0
    )
    early = StoredSpan(
        "a" * 32, "2" * 16, "1" * 16, "cart", "GetCart", 2, start_us=990, duration_us=50, status=0
    )
    inside = StoredSpan(
        "a" * 32, "3" * 16, "1" * 16, "frontend", "render", 1, start_us=900, duration_us=5, status=0
    )
    trace = jaeger_trace([parent, early, inside])
    warnings = {s["spanID"]: s["warnings"] for s in trace["spans"]}
    assert warnings["2" * 16] == [
        "clock skew: starts 10 µs before its parent span in frontend; times are as recorded"
    ]
    assert warnings["1" * 16] is None
    assert warnings["3" * 16] is None  # same process: an early child is not a clock problem
    assert [s["startTime"] for s in trace["spans"]] == [1000, 990, 900]  # nothing shifted
