"""Zipkin's v2 query API: services, span names, trace search, one trace, several traces, dependencies.

Spans come back in Zipkin's v2 JSON: 16 or 32 hex digit trace ids, kind for server, client,
producer and consumer spans, µs timestamps and durations, string tags (with `error` holding the
status message, or "true", on failed spans) and events as annotations. `peer.service` becomes the
remote endpoint's service name. Bad parameters get the same 400 envelope as the Jaeger v1 API.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.api.jaeger import guarded, jaeger_id
from boutique.observatory.model import STATUS_NAMES, STATUS_UNSET, Span
from boutique.observatory.otlp.values import jsonable
from boutique.observatory.store.base import Store

ZIPKIN_KINDS = {2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
DEPENDENCY_LOOKBACK_MS = 24 * 3600 * 1000


def tag_value(value: Any) -> str:
    """A tag value as Zipkin's string: booleans as true/false, containers as JSON, bytes base64."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list | dict):
        return json.dumps(jsonable(value))
    return "" if value is None else str(value)


def zipkin_span(span: Span) -> dict[str, Any]:
    """One span in Zipkin v2 JSON."""
    out: dict[str, Any] = {"traceId": jaeger_id(span.trace_id), "id": span.span_id}
    if span.parent_id:
        out["parentId"] = span.parent_id
    out["name"] = span.operation
    if span.kind in ZIPKIN_KINDS:
        out["kind"] = ZIPKIN_KINDS[span.kind]
    out["timestamp"] = span.start_us
    out["duration"] = span.duration_us
    out["localEndpoint"] = {"serviceName": span.service}
    peer = span.attributes.get("peer.service")
    if isinstance(peer, str) and peer:
        out["remoteEndpoint"] = {"serviceName": peer}
    out["annotations"] = [
        {
            "timestamp": e.time_us,
            "value": json.dumps({e.name: jsonable(e.attributes)}) if e.attributes else e.name,
        }
        for e in span.events
    ]
    tags = {k: tag_value(v) for k, v in span.attributes.items()}
    if span.scope_name:
        tags["otel.scope.name"] = span.scope_name
    if span.scope_version:
        tags["otel.scope.version"] = span.scope_version
    if span.status != STATUS_UNSET:
        tags["otel.status_code"] = STATUS_NAMES.get(span.status, str(span.status))
    if span.is_error:
        tags["error"] = span.status_message or "true"
    elif span.status_message:
        tags["otel.status_description"] = span.status_message
    out["tags"] = tags
    return out


def zipkin_trace(spans: Sequence[Span]) -> list[dict[str, Any]]:
    """A trace as Zipkin's list of spans."""
    return [zipkin_span(s) for s in spans]


@dataclass
class ZipkinApi:
    """The Zipkin v2 query handlers over one store."""

    store: Store

    async def services(self, request: Request) -> Response:
        """`GET /api/v2/services`."""
        return JSONResponse(await run_in_threadpool(self.store.services))

    async def spans(self, request: Request) -> Response:
        """`GET /api/v2/spans?serviceName=`: the service's span names."""
        service = p.text(request.query_params, "serviceName")
        if service is None:
            raise p.ParamError("serviceName", "required")
        pairs = await run_in_threadpool(self.store.operations, service, None)
        return JSONResponse(list(dict.fromkeys(name for name, _ in pairs)))

    async def traces(self, request: Request) -> Response:
        """`GET /api/v2/traces`: search, a list of traces each a list of spans."""
        query = p.zipkin_trace_query(request.query_params, time.time_ns() // 1000)

        def run() -> list[list[Span]]:
            return self.store.search(query)

        return JSONResponse([zipkin_trace(t) for t in await run_in_threadpool(run)])

    async def trace(self, request: Request) -> Response:
        """`GET /api/v2/trace/{traceId}`: one trace, 404 when absent."""
        raw = request.path_params["trace_id"]
        found = await run_in_threadpool(self.store.traces, [p.parse_trace_id("traceId", raw)])
        if not found:
            return p.error_response(404, f"trace not found: {raw}")
        return JSONResponse(zipkin_trace(found[0]))

    async def trace_many(self, request: Request) -> Response:
        """`GET /api/v2/traceMany?traceIds=a,b`: the traces found among those asked."""
        ids = p.trace_ids("traceIds", request.query_params.getlist("traceIds"))
        if not ids:
            raise p.ParamError("traceIds", "required, a comma-separated list of trace ids")
        found = await run_in_threadpool(self.store.traces, ids)
        return JSONResponse([zipkin_trace(t) for t in found])

    async def dependencies(self, request: Request) -> Response:
        """`GET /api/v2/dependencies?endTs=&lookback=` (ms)."""
        params = request.query_params
        end_text, lookback_text = p.text(params, "endTs"), p.text(params, "lookback")
        end = p.parse_int("endTs", end_text, minimum=0) * 1000 if end_text else time.time_ns() // 1000
        lookback = (
            p.parse_int("lookback", lookback_text, minimum=0) if lookback_text else DEPENDENCY_LOOKBACK_MS
        )
        found = await run_in_threadpool(self.store.dependencies, max(0, end - lookback * 1000), end)
        return JSONResponse(
            [
                {"parent": d.parent, "child": d.child, "callCount": d.calls, "errorCount": d.errors}
                for d in found
            ]
        )


def zipkin_routes(store: Store) -> list[BaseRoute]:
    """The Zipkin v2 query routes over a store."""
    api = ZipkinApi(store)
    return [
        Route("/api/v2/services", guarded(api.services)),
        Route("/api/v2/spans", guarded(api.spans)),
        Route("/api/v2/traces", guarded(api.traces)),
        Route("/api/v2/trace/{trace_id}", guarded(api.trace)),
        Route("/api/v2/traceMany", guarded(api.trace_many)),
        Route("/api/v2/dependencies", guarded(api.dependencies)),
    ]
