"""Jaeger's api/v3 over HTTP: services, operations, traces (as OTLP-JSON) and trace summaries.

Traces come back as `{"result": {"resourceSpans": [...]}}` with spans grouped again by resource
and instrumentation scope, ids in hex, kinds and status codes as numbers, 64-bit integers and
nanosecond times as strings. Errors have the grpc-gateway shape `{"error": {"httpCode", "message"}}`.

`GET /api/v3/trace-summaries` (what Jaeger UI 2.x's search page calls) follows Jaeger's gateway:
jaegertracing/jaeger `cmd/jaeger/internal/extension/jaegerquery/internal/apiv3/http_gateway.go`
(`findTraceSummaries`, from pull request 8604 on), `querysvc/summary.go` at commit
69442a594a54e2416a7c406061955a351e8f6376, the messages of jaegertracing/jaeger-idl
`proto/api_v3/query_service.proto` at commit 000e4daeaf0bb3c6e8ef39de46becaf48e789d07, and the snapshot
`apiv3/snapshots/FindTraceSummaries.json` at commit 008074a29040285a7833dcec0aaeed6ec9e6fe43. The answer is
proto3 JSON as Jaeger's jsonpb writes it: fields in proto order, zero values and empty lists left out (so
no match at all is `{}`), 64-bit nanosecond times as decimal strings.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.api.jaeger_v3_query import V3QueryError, parse_v3_search
from boutique.observatory.model import KIND_NAMES, Span
from boutique.observatory.otlp.values import jsonable
from boutique.observatory.store.base import Store


def error(status: int, message: str) -> JSONResponse:
    """The api/v3 error body."""
    return JSONResponse({"error": {"httpCode": status, "message": message}}, status_code=status)


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP-JSON AnyValue."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    return {}


def key_values(values: dict[str, Any]) -> list[dict[str, Any]]:
    """A dict as an OTLP-JSON KeyValue list."""
    return [{"key": k, "value": any_value(v)} for k, v in values.items()]


def otlp_span(span: Span) -> dict[str, Any]:
    """One span in OTLP-JSON."""
    out: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id}
    if span.trace_state:
        out["traceState"] = span.trace_state
    if span.parent_id:
        out["parentSpanId"] = span.parent_id
    status: dict[str, Any] = {}
    if span.status_message:
        status["message"] = span.status_message
    if span.status:
        status["code"] = span.status
    out.update(
        {
            "name": span.operation,
            "kind": span.kind,
            "startTimeUnixNano": str(span.start_us * 1000),
            "endTimeUnixNano": str(span.end_us * 1000),
            "attributes": key_values(span.attributes),
            "events": [
                {
                    "timeUnixNano": str(e.time_us * 1000),
                    "name": e.name,
                    "attributes": key_values(e.attributes),
                }
                for e in span.events
            ],
            "links": [
                {"traceId": link.trace_id, "spanId": link.span_id, "attributes": key_values(link.attributes)}
                for link in span.links
            ],
            "status": status,
        }
    )
    return out


def resource_spans(spans: Sequence[Span]) -> list[dict[str, Any]]:
    """Spans grouped back into resourceSpans / scopeSpans, in order of first appearance."""
    resources: dict[str, dict[str, Any]] = {}
    scopes: dict[tuple[str, str, str], dict[str, Any]] = {}
    for span in spans:
        resource_key = json.dumps(jsonable(span.resource), sort_keys=True, default=str)
        group = resources.get(resource_key)
        if group is None:
            group = resources[resource_key] = {
                "resource": {"attributes": key_values(span.resource)},
                "scopeSpans": [],
            }
        scope_key = (resource_key, span.scope_name, span.scope_version)
        scope_group = scopes.get(scope_key)
        if scope_group is None:
            scope: dict[str, str] = {}
            if span.scope_name:
                scope["name"] = span.scope_name
            if span.scope_version:
                scope["version"] = span.scope_version
            scope_group = scopes[scope_key] = {"scope": scope, "spans": []}
            group["scopeSpans"].append(scope_group)
        scope_group["spans"].append(otlp_span(span))
    return list(resources.values())


def proto3(fields: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A message as proto3 JSON: the fields in order, leaving out "", 0 and empty lists."""
    return {name: value for name, value in fields if value not in ("", 0, [])}


def _is_root(span: Span) -> bool:
    """No parent: an empty parent id, or one of zeros (what OTLP's all-zero bytes decode to)."""
    return not span.parent_id.strip("0")


def trace_summary(spans: Sequence[Span]) -> dict[str, Any]:
    """One trace as Jaeger's TraceSummary.

    As Jaeger computes it: the root is the earliest-starting span without a parent (none: no root names),
    errors are spans whose status is ERROR, orphans are spans whose parent is not in the trace, and the
    per-service counts come sorted by service name.
    """
    span_ids = {span.span_id for span in spans}
    services: dict[str, list[int]] = {}
    root: Span | None = None
    errors = orphans = 0
    for span in spans:
        counts = services.setdefault(span.service, [0, 0])
        counts[0] += 1
        if span.is_error:
            counts[1] += 1
            errors += 1
        if _is_root(span):
            if root is None or span.start_us < root.start_us:
                root = span
        elif span.parent_id not in span_ids:
            orphans += 1
    start_ns = min(span.start_us for span in spans) * 1000
    end_ns = max(span.end_us for span in spans) * 1000
    return proto3(
        [
            ("traceId", spans[0].trace_id),
            ("rootServiceName", root.service if root else ""),
            ("rootOperationName", root.operation if root else ""),
            ("minStartTimeUnixNano", str(start_ns) if start_ns > 0 else ""),
            ("maxEndTimeUnixNano", str(end_ns) if end_ns > 0 else ""),
            ("spanCount", len(spans)),
            ("errorSpanCount", errors),
            ("orphanSpanCount", orphans),
            (
                "services",
                [
                    proto3([("name", name), ("spanCount", count), ("errorSpanCount", failed)])
                    for name, (count, failed) in sorted(services.items())
                ],
            ),
        ]
    )


def traces_response(traces: Sequence[Sequence[Span]]) -> dict[str, Any]:
    """The answer body for some traces."""
    return {"result": {"resourceSpans": resource_spans([s for trace in traces for s in trace])}}


@dataclass
class V3Api:
    """The api/v3 handlers over one store."""

    store: Store

    async def services(self, request: Request) -> Response:
        """`GET /api/v3/services`."""
        return JSONResponse({"services": await run_in_threadpool(self.store.services)})

    async def operations(self, request: Request) -> Response:
        """`GET /api/v3/operations?service=&span_kind=`."""
        try:
            kind_text = p.text(request.query_params, "span_kind")
            kind = p.parse_span_kind("span_kind", kind_text) if kind_text else None
        except p.ParamError as exc:
            return error(400, str(exc))
        pairs = await run_in_threadpool(self.store.operations, p.text(request.query_params, "service"), kind)
        operations = [
            {"name": name, "spanKind": "" if k == 0 else KIND_NAMES.get(k, "")} for name, k in pairs
        ]
        return JSONResponse({"operations": operations})

    async def find_traces(self, request: Request) -> Response:
        """`GET /api/v3/traces?query.*=`: the matching traces' spans."""
        try:
            query = p.v3_trace_query(request.query_params)
        except p.ParamError as exc:
            return error(400, str(exc))

        def run() -> list[list[Span]]:
            return self.store.search(query)

        return JSONResponse(traces_response(await run_in_threadpool(run)))

    async def trace_summaries(self, request: Request) -> Response:
        """`GET /api/v3/trace-summaries?query.*=`: a TraceSummary for each matching trace (see above)."""
        try:
            search = parse_v3_search(request.query_params)
        except V3QueryError as exc:
            return error(400, str(exc))
        traces = await run_in_threadpool(self.store.search, search.query)
        summaries = [trace_summary(trace) for trace in traces if trace]
        return JSONResponse(proto3([("summaries", summaries)]))

    async def trace(self, request: Request) -> Response:
        """`GET /api/v3/traces/{trace_id}`: one trace, 404 when absent."""
        raw = request.path_params["trace_id"]
        try:
            trace_id = p.parse_trace_id("trace_id", raw)
        except p.ParamError as exc:
            return error(400, str(exc))
        found = await run_in_threadpool(self.store.traces, [trace_id])
        if not found:
            return error(404, f"trace not found: {raw}")
        return JSONResponse(traces_response(found))


def v3_routes(store: Store) -> list[BaseRoute]:
    """The api/v3 routes over a store."""
    api = V3Api(store)
    return [
        Route("/api/v3/services", api.services),
        Route("/api/v3/operations", api.operations),
        Route("/api/v3/traces", api.find_traces),
        Route("/api/v3/trace-summaries", api.trace_summaries),
        Route("/api/v3/traces/{trace_id}", api.trace),
    ]
