"""Jaeger's internal HTTP API (v1), the one the Jaeger UI and Grafana's Jaeger data source read.

Spans are shown the way Jaeger shows OTLP data: span kind, status and scope become the tags
`span.kind`, `otel.status_code`, `otel.status_description`, `error`, `otel.scope.name`/`version`;
events become logs (the name in an `event` field); links become FOLLOWS_FROM references; each
distinct (service, resource attributes) pair is one process, its tags the resource attributes.
Search parameters are described in `boutique.observatory.api.params`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.model import KIND_NAMES, KIND_NUMBERS, STATUS_NAMES, STATUS_UNSET, Span
from boutique.observatory.otlp.values import jsonable
from boutique.observatory.store.base import RedPoint, Store

Handler = Callable[[Request], Awaitable[Response]]

DEPENDENCY_LOOKBACK_MS = 24 * 3600 * 1000
METRICS_LOOKBACK_MS = 3600 * 1000
METRICS_STEP_MS = 5000
METRICS_RATE_PER_MS = 600_000
METRICS_MIN_STEP_MS = 1000
MAX_METRIC_STEPS = 20_000


def now_us() -> int:
    """The current time in Unix microseconds."""
    return time.time_ns() // 1000


def guarded(handler: Handler) -> Handler:
    """Answer a `ParamError` raised by the handler with a 400 Jaeger error envelope."""

    @wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except p.ParamError as exc:
            return p.error_response(400, str(exc))

    return run


# ---- the trace shape ---------------------------------------------------------------------------


def jaeger_id(hex_id: str) -> str:
    """A 32-digit trace id as Jaeger prints it: 16 digits when the high half is zero."""
    return hex_id[16:] if len(hex_id) == 32 and hex_id.startswith("0" * 16) else hex_id


def tag(key: str, value: Any) -> dict[str, Any]:
    """One typed Jaeger tag; lists and maps become their JSON text, bytes base64."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"key": key, "type": "float64", "value": value}
        return {"key": key, "type": "string", "value": str(value)}
    if isinstance(value, bytes):
        return {"key": key, "type": "binary", "value": base64.b64encode(value).decode()}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if value is None:
        return {"key": key, "type": "string", "value": ""}
    return {"key": key, "type": "string", "value": json.dumps(jsonable(value))}


def span_tags(span: Span) -> list[dict[str, Any]]:
    """The span's attributes plus the tags Jaeger derives from OTLP fields."""
    tags = [tag(k, v) for k, v in span.attributes.items()]
    if span.scope_name:
        tags.append(tag("otel.scope.name", span.scope_name))
    if span.scope_version:
        tags.append(tag("otel.scope.version", span.scope_version))
    if span.kind in KIND_NAMES and span.kind != KIND_NUMBERS["unspecified"]:
        tags.append(tag("span.kind", span.kind_name))
    if span.status != STATUS_UNSET:
        tags.append(tag("otel.status_code", STATUS_NAMES.get(span.status, str(span.status))))
    if span.status_message:
        tags.append(tag("otel.status_description", span.status_message))
    if span.is_error:
        tags.append(tag("error", True))
    if span.trace_state:
        tags.append(tag("w3c.tracestate", span.trace_state))
    return tags


def _process_key(span: Span) -> str:
    return json.dumps([span.service, jsonable(span.resource)], sort_keys=True, default=str)


def skew_warnings(spans: Sequence[Span]) -> dict[str, list[str]]:
    """Warnings for spans that lie outside their parent in another service: clocks disagree.

    Times are shown as recorded; the warning says by how much, rather than shifting spans silently.
    """
    by_id = {span.span_id: span for span in spans}
    warnings: dict[str, list[str]] = {}
    for span in spans:
        parent = by_id.get(span.parent_id)
        if parent is None or parent.service == span.service:
            continue
        early, late = parent.start_us - span.start_us, span.end_us - parent.end_us
        if early > 0 or late > 0:
            what = f"starts {early} µs before" if early > 0 else f"ends {late} µs after"
            warnings.setdefault(span.span_id, []).append(
                f"clock skew: {what} its parent span in {parent.service}; times are as recorded"
            )
    return warnings


def jaeger_trace(spans: Sequence[Span]) -> dict[str, Any]:
    """One trace in Jaeger's JSON shape (spans in the order given)."""
    skewed = skew_warnings(spans)
    processes: dict[str, dict[str, Any]] = {}
    process_ids: dict[str, str] = {}
    out_spans = []
    for span in spans:
        key = _process_key(span)
        process_id = process_ids.get(key)
        if process_id is None:
            process_id = process_ids[key] = f"p{len(process_ids) + 1}"
            processes[process_id] = {
                "serviceName": span.service,
                "tags": [tag(k, v) for k, v in span.resource.items() if k != "service.name"],
            }
        trace_id = jaeger_id(span.trace_id)
        references = []
        if span.parent_id:
            references.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_id})
        references.extend(
            {"refType": "FOLLOWS_FROM", "traceID": jaeger_id(link.trace_id), "spanID": link.span_id}
            for link in span.links
        )
        out_spans.append(
            {
                "traceID": trace_id,
                "spanID": span.span_id,
                "operationName": span.operation,
                "references": references,
                "flags": 1,
                "startTime": span.start_us,
                "duration": span.duration_us,
                "tags": span_tags(span),
                "logs": [
                    {
                        "timestamp": event.time_us,
                        "fields": [tag("event", event.name)]
                        + [tag(k, v) for k, v in event.attributes.items()],
                    }
                    for event in span.events
                ],
                "processID": process_id,
                "warnings": [*span.warnings, *skewed.get(span.span_id, ())] or None,
            }
        )
    trace_id = jaeger_id(spans[0].trace_id) if spans else ""
    return {"traceID": trace_id, "spans": out_spans, "processes": processes, "warnings": None}


# ---- handlers ----------------------------------------------------------------------------------


@dataclass
class JaegerApi:
    """The v1 handlers over one store."""

    store: Store

    async def services(self, request: Request) -> Response:
        """`GET /api/services`: every service name."""
        return JSONResponse(p.envelope(await run_in_threadpool(self.store.services)))

    async def service_operations(self, request: Request) -> Response:
        """`GET /api/services/{service}/operations`: the service's operation names."""
        pairs = await run_in_threadpool(self.store.operations, request.path_params["service"], None)
        return JSONResponse(p.envelope(list(dict.fromkeys(name for name, _ in pairs))))

    async def operations(self, request: Request) -> Response:
        """`GET /api/operations?service=&spanKind=`: [{name, spanKind}] (all services without one)."""
        kind_text = p.text(request.query_params, "spanKind")
        kind = p.parse_span_kind("spanKind", kind_text) if kind_text else None
        service = p.text(request.query_params, "service")
        pairs = await run_in_threadpool(self.store.operations, service, kind)
        data = [{"name": name, "spanKind": "" if k == 0 else KIND_NAMES.get(k, "")} for name, k in pairs]
        return JSONResponse(p.envelope(data))

    async def traces(self, request: Request) -> Response:
        """`GET /api/traces`: search (or fetch the `traceID`s given), full traces."""
        wanted = p.trace_ids("traceID", request.query_params.getlist("traceID"))
        query = None if wanted else p.jaeger_trace_query(request.query_params, now_us())

        def run() -> list[list[Span]]:
            return self.store.traces(wanted) if query is None else self.store.search(query)

        found = await run_in_threadpool(run)
        return JSONResponse(p.envelope([jaeger_trace(spans) for spans in found]))

    async def trace(self, request: Request) -> Response:
        """`GET /api/traces/{traceID}`: one trace, 404 when absent."""
        raw = request.path_params["trace_id"]
        trace_id = p.parse_trace_id("traceID", raw)
        found = await run_in_threadpool(self.store.traces, [trace_id])
        if not found:
            return p.error_response(404, f"trace not found: {raw}")
        return JSONResponse(p.envelope([jaeger_trace(found[0])]))

    async def dependencies(self, request: Request) -> Response:
        """`GET /api/dependencies?endTs=&lookback=` (ms): [{parent, child, callCount, errorCount}]."""
        params = request.query_params
        end_text, lookback_text = p.text(params, "endTs"), p.text(params, "lookback")
        end = p.parse_int("endTs", end_text, minimum=0) * 1000 if end_text else now_us()
        lookback = (
            p.parse_int("lookback", lookback_text, minimum=0) if lookback_text else DEPENDENCY_LOOKBACK_MS
        )
        found = await run_in_threadpool(self.store.dependencies, max(0, end - lookback * 1000), end)
        data = [
            {"parent": d.parent, "child": d.child, "callCount": d.calls, "errorCount": d.errors}
            for d in found
        ]
        return JSONResponse(p.envelope(data))

    async def metrics(self, request: Request) -> Response:
        """`GET /api/metrics/{latencies|calls|errors|minstep}`: RED figures as a Jaeger MetricFamily."""
        name = request.path_params["metric"]
        if name == "minstep":
            return JSONResponse(p.envelope(METRICS_MIN_STEP_MS))
        if name not in METRICS:
            raise p.ParamError("metric", f"unknown metric {name!r}; one of latencies, calls, errors, minstep")
        query = MetricsQuery.parse(name, request)
        points = await run_in_threadpool(
            self.store.red,
            query.services,
            query.query_start_us,
            query.end_us,
            query.step_us,
            [query.quantile] if query.quantile is not None else [],
            query.by_operation,
            query.span_kinds,
        )
        return JSONResponse(query.family(points))


# ---- metrics -----------------------------------------------------------------------------------

METRICS = {
    "latencies": ("service_latencies", "{quantile:.2f}th quantile latency, grouped by service"),
    "calls": ("service_call_rate", "calls/sec, grouped by service"),
    "errors": (
        "service_error_rate",
        "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service",
    ),
}


@dataclass(frozen=True)
class MetricsQuery:
    """A checked metrics request: which figure, of what, over which steps.

    Calls are a per-second rate over the `ratePer` window ending at each step (as Jaeger's
    `rate(calls[ratePer])`), errors the share of those calls that failed, latencies the quantile
    in milliseconds of the spans of each step.
    """

    metric: str
    services: tuple[str, ...]
    quantile: float | None
    by_operation: bool
    span_kinds: tuple[int, ...]
    start_us: int
    end_us: int
    step_us: int
    window_steps: int

    @classmethod
    def parse(cls, metric: str, request: Request) -> MetricsQuery:
        """Read and check the parameters (service required, quantile for latencies)."""
        params = request.query_params
        services = tuple(dict.fromkeys(p.values(params, "service")))
        if not services:
            raise p.ParamError("service", "at least one service is required")
        quantile = None
        quantile_text = p.text(params, "quantile")
        if metric == "latencies":
            if quantile_text is None:
                raise p.ParamError("quantile", "required for latencies, a number between 0 and 1")
            quantile = p.parse_float("quantile", quantile_text)
            if not 0 < quantile < 1:
                raise p.ParamError("quantile", f"must be between 0 and 1 (exclusive), got {quantile_text}")
        group = p.text(params, "groupByOperation")
        kinds = tuple(p.parse_span_kind("spanKind", v) for v in p.values(params, "spanKind"))

        def millis(name: str, default: int, minimum: int) -> int:
            value = p.text(params, name)
            return p.parse_int(name, value, minimum=minimum) if value else default

        end_ms = millis("endTs", now_us() // 1000, 0)
        lookback_ms = millis("lookback", METRICS_LOOKBACK_MS, 1)
        step_ms = millis("step", METRICS_STEP_MS, 1)
        rate_per_ms = millis("ratePer", METRICS_RATE_PER_MS, 1)
        steps = -(-lookback_ms // step_ms)
        if steps > MAX_METRIC_STEPS:
            raise p.ParamError(
                "step", f"too small for the lookback: {steps} steps, at most {MAX_METRIC_STEPS}"
            )
        return cls(
            metric=metric,
            services=services,
            quantile=quantile,
            by_operation=p.parse_bool("groupByOperation", group) if group else False,
            span_kinds=tuple(dict.fromkeys(kinds)) or (KIND_NUMBERS["server"],),
            start_us=(end_ms - steps * step_ms) * 1000,
            end_us=end_ms * 1000,
            step_us=step_ms * 1000,
            window_steps=1 if metric == "latencies" else max(1, -(-rate_per_ms // step_ms)),
        )

    @property
    def query_start_us(self) -> int:
        """Where the store query starts: early enough to fill the rate window of the first step."""
        return self.start_us - (self.window_steps - 1) * self.step_us

    def family(self, points: Sequence[RedPoint]) -> dict[str, Any]:
        """The MetricFamily JSON of the store's per-step points."""
        name, help_text = METRICS[self.metric]
        if self.by_operation:
            name = name.replace("service", "service_operation", 1)
            help_text += " & operation"
        series: dict[tuple[str, str], dict[int, RedPoint]] = {}
        for point in points:
            series.setdefault((point.service, point.operation), {})[point.timestamp_us] = point
        metrics = []
        for (service, operation), by_time in series.items():
            labels = [{"name": "service_name", "value": service}]
            if self.by_operation:
                labels.append({"name": "operation", "value": operation})
            metric_points = [
                {"gaugeValue": {"doubleValue": value}, "timestamp": p.rfc3339(stamp)}
                for stamp, value in self._values(by_time)
            ]
            if metric_points:
                metrics.append({"labels": labels, "metricPoints": metric_points})
        return {
            "name": name,
            "type": "GAUGE",
            "help": help_text.format(quantile=self.quantile or 0.0),
            "metrics": metrics,
        }

    def _values(self, by_time: dict[int, RedPoint]) -> list[tuple[int, float]]:
        """(timestamp, value) of every step the figure is defined at."""
        out = []
        seconds = self.window_steps * self.step_us / 1e6
        for k in range(1, (self.end_us - self.start_us) // self.step_us + 1):
            stamp = self.start_us + k * self.step_us
            if self.metric == "latencies":
                point = by_time.get(stamp)
                if point is not None and self.quantile in point.quantiles:
                    out.append((stamp, float(point.quantiles[self.quantile])))
                continue
            window = [by_time.get(stamp - i * self.step_us) for i in range(self.window_steps)]
            calls = sum(w.calls for w in window if w is not None)
            errors = sum(w.errors for w in window if w is not None)
            if self.metric == "calls":
                out.append((stamp, calls / seconds))
            elif calls:
                out.append((stamp, errors / calls))
        return out


def jaeger_routes(store: Store) -> list[BaseRoute]:
    """The v1 routes over a store."""
    api = JaegerApi(store)
    return [
        Route("/api/services", api.services),
        Route("/api/services/{service:path}/operations", api.service_operations),
        Route("/api/operations", guarded(api.operations)),
        Route("/api/traces", guarded(api.traces)),
        Route("/api/traces/{trace_id}", guarded(api.trace)),
        Route("/api/dependencies", guarded(api.dependencies)),
        Route("/api/metrics/{metric}", guarded(api.metrics)),
    ]
