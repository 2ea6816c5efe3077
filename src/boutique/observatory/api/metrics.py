"""The metrics query API (JSON under `/api/metrics/`), over the store's `read`.

Times are Unix microseconds, in parameters and answers.

- `GET /api/metrics/series?service=&name=` → `{"data": [{"name", "service", "kind", "unit", "description",
  "temporality", "monotonic", "labels": {attribute: [values...]}}]}`: each instrument of each service,
  with every attribute's values over its series (and `instance`, the instances reporting it).
- `GET /api/metrics/query?name=&service=&filters=&groupBy=&fn=&quantile=&step=&start=&end=` →
  `{"data": {"name", "unit", "kind", "fn", "step", "series": [{"labels", "points": [[t, value|null]]}]}}`.
  `name` is required; `filters` a JSON object of attribute → value (or list of values, any of which
  matches; `service` and `instance` match the series' own); `groupBy` comma-separated keys (attributes,
  `service`, `instance`): series are summed over everything else; `fn` by kind (see `metrics.query`),
  default the first of: sums `value|increase|rate`, gauges `value|avg|min|max`, histograms and
  summaries `count|sum|count_rate|avg|quantile`; `quantile` 0..1 (default 0.95); `step` µs (or a
  duration such as `30s`), default (end - start) / 120; `end` default now, `start` default an hour
  before end.
- `GET /api/metrics/exemplars?name=&service=&filters=&start=&end=&limit=` → `{"data": [{"time",
  "value", "traceID", "spanID", "labels", "service", "instance"}]}`, the newest `limit` (default 1000,
  at most 10000) in time order.

A bad parameter is answered 400 with `{"errors": [{"code": 400, "msg": ...}]}` naming it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.api.jaeger import guarded
from boutique.observatory.metrics import query as q
from boutique.observatory.store.base import Store

DEFAULT_WINDOW_US = 3600 * 1_000_000
DEFAULT_STEPS = 120
DEFAULT_QUANTILE = 0.95
EXEMPLAR_LIMIT, MAX_EXEMPLAR_LIMIT = 1000, 10_000


def parse_filters(value: str | None) -> dict[str, frozenset[str]]:
    """`filters`: a JSON object of key → value or list of values (compared as label text)."""
    if not value:
        return {}
    try:
        decoded = json.loads(value)
    except ValueError as exc:
        raise p.ParamError("filters", f"not valid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise p.ParamError("filters", 'must be a JSON object like {"rpc.method": "GetCart"}')
    found = {}
    for key, wanted in decoded.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if not options or not all(isinstance(o, str | int | float | bool) for o in options):
            raise p.ParamError("filters", f"{key!r} must be a string, number or boolean, or a list of them")
        found[key] = frozenset(q.label_text(o) for o in options)
    return found


def parse_group_by(value: str | None) -> tuple[str, ...]:
    """`groupBy`: comma-separated label keys, each once."""
    if not value:
        return ()
    keys = [k.strip() for k in value.split(",")]
    if any(not k for k in keys):
        raise p.ParamError("groupBy", f"empty key in {value!r}")
    return tuple(dict.fromkeys(keys))


def parse_window(params: QueryParams) -> tuple[int, int]:
    """`start` and `end` (µs): end defaults to now, start to an hour before end."""
    end_text, start_text = p.text(params, "end"), p.text(params, "start")
    end = p.parse_int("end", end_text, minimum=0) if end_text else time.time_ns() // 1000
    start = p.parse_int("start", start_text, minimum=0) if start_text else max(0, end - DEFAULT_WINDOW_US)
    if start >= end:
        raise p.ParamError("start", "must be before 'end'")
    return start, end


def parse_step(value: str | None, start: int, end: int) -> int:
    """`step`: µs, or a duration such as `30s`; default a 120th of the window."""
    if not value:
        return max(1, -(-(end - start) // DEFAULT_STEPS))
    step = (
        p.parse_int("step", value, minimum=1)
        if value.strip().isdigit()
        else p.parse_duration_us("step", value)
    )
    if step < 1:
        raise p.ParamError("step", f"must be positive, got {value!r}")
    return step


def parse_quantile(value: str | None) -> float:
    if not value:
        return DEFAULT_QUANTILE
    number = p.parse_float("quantile", value)
    if not 0.0 <= number <= 1.0:
        raise p.ParamError("quantile", f"must be between 0 and 1, got {value}")
    return number


def metric_query(params: QueryParams) -> q.MetricQuery:
    """The query of `/api/metrics/query` (see the module docstring)."""
    name = p.text(params, "name")
    if name is None:
        raise p.ParamError("name", "the metric's name is required")
    start, end = parse_window(params)
    fn = p.text(params, "fn")
    known = {f for fns in q.FNS.values() for f in fns}
    if fn is not None and fn not in known:
        raise p.ParamError("fn", f"unknown function {fn!r}; one of {', '.join(sorted(known))}")
    return q.MetricQuery(
        name=name,
        service=p.text(params, "service"),
        filters=parse_filters(p.text(params, "filters")),
        group_by=parse_group_by(p.text(params, "groupBy")),
        fn=fn,
        quantile=parse_quantile(p.text(params, "quantile")),
        start_us=start,
        end_us=end,
        step_us=parse_step(p.text(params, "step"), start, end),
    )


class MetricsApi:
    """The handlers over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _read(self, work: Callable[[Any], Any]) -> Any:
        """The result of a read in a worker thread; a query that cannot be answered as asked is a 400."""
        try:
            return await run_in_threadpool(self.store.read, work)
        except q.QueryError as exc:
            raise p.ParamError(exc.name, exc.reason) from None

    async def series(self, request: Request) -> Response:
        """`GET /api/metrics/series`: instruments, their services and labels."""
        params = request.query_params
        name, service = p.text(params, "name"), p.text(params, "service")
        data = await self._read(lambda db: q.series_list(db, name, service))
        return JSONResponse({"data": data})

    async def query(self, request: Request) -> Response:
        """`GET /api/metrics/query`: one instrument's values per step, per group."""
        wanted = metric_query(request.query_params)
        data = await self._read(lambda db: q.run_query(db, wanted))
        return JSONResponse({"data": data})

    async def exemplars(self, request: Request) -> Response:
        """`GET /api/metrics/exemplars`: exemplars of an instrument's points in the window."""
        params = request.query_params
        name = p.text(params, "name")
        if name is None:
            raise p.ParamError("name", "the metric's name is required")
        service, filters = p.text(params, "service"), parse_filters(p.text(params, "filters"))
        start, end = parse_window(params)
        limit_text = p.text(params, "limit")
        limit = p.parse_int("limit", limit_text, 1, MAX_EXEMPLAR_LIMIT) if limit_text else EXEMPLAR_LIMIT
        data = await self._read(lambda db: q.exemplars(db, name, service, filters, start, end, limit))
        return JSONResponse({"data": data})


def metrics_routes(store: Store) -> list[BaseRoute]:
    """The metrics routes for the query port."""
    api = MetricsApi(store)
    return [
        Route("/api/metrics/series", guarded(api.series)),
        Route("/api/metrics/query", guarded(api.query)),
        Route("/api/metrics/exemplars", guarded(api.exemplars)),
    ]
