"""The profiles query API (under `/api/profiles`), over the store's `read`.

Times are Unix µs, in parameters and answers. The filters every route takes: `service`, `instance`,
`type` (default "cpu"), `traceID` and `spanID` (hex), `thread`, `granularity` (`function`, the
default, merges a function's lines into one frame; `line` keeps them), `start` and `end` (default: the
last hour; with a `traceID` and neither bound, the stored trace's — or `spanID`'s span's — own window,
counting every row linked to it). `service` is required unless `traceID` is given (except for
`/traces`, which may look at every service).

- `GET /api/profiles` → `{"data": node, "type", "unit", "samples": rows, "start", "end"}`, a node
  being `{"name", "self", "total", "children": [node]}` (root "total", children by total, largest
  first, ties by name; values in the unit).
  `maxNodes` (default 8192, 0 for all) keeps the largest frames and folds each kept frame's smaller
  callees into one "(other)" callee (totals stay exact); `pruned` says how many frames went.
- `GET /api/profiles/diff?...&baseStart=&baseEnd=` → the same, nodes also carrying `baseSelf` and
  `baseTotal` (the base window's values; without `baseStart`/`baseEnd` the base is the window just
  before, as long; with one of them, a window as long from it), and `baseStart`, `baseEnd`,
  `baseSamples` beside `data`.
- `GET /api/profiles/top?...&limit=50` → `{"data": [{"name", "self", "total"}]}` by self, largest first.
- `GET /api/profiles/pprof?...` → a gzip-compressed pprof `Profile`, as an attachment (frames keep
  their lines whatever the granularity: pprof merges them itself).
- `GET /api/profiles/traces?frame=&...&limit=20` → `{"data": [{"traceID", "spanID", "service",
  "operation", "value", "start"}]}`, the spans that spent the most in stacks holding the frame.
- `GET /api/profiles/services` → `{"data": [{"service", "types", "instances"}]}`.

A bad parameter is answered 400 with the Jaeger error envelope naming it. Trees are built and written
as JSON on the thread pool: a large profile never holds up the event loop.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import duckdb
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.api.jaeger import guarded
from boutique.observatory.api.logs import parse_span_id
from boutique.observatory.profiles import query as q
from boutique.observatory.profiles.pprof_out import query_pprof
from boutique.observatory.store.base import Store

Window = tuple[int | None, int | None]
DEFAULT_MAX_NODES = 8192  # frames a tree answer keeps by default: a flame graph has no room for more


def parse_window(params: QueryParams, start_name: str, end_name: str, now_us: int | None) -> Window:
    """Two optional bounds in µs, the start not after the end (nor, without an end, after `now_us` when
    the end defaults to now)."""
    start_text, end_text = p.text(params, start_name), p.text(params, end_name)
    start = p.parse_int(start_name, start_text, minimum=0) if start_text else None
    end = p.parse_int(end_name, end_text, minimum=0) if end_text else None
    latest = end if end is not None else now_us
    if start is not None and latest is not None and start > latest:
        raise p.ParamError(start_name, f"must not be after '{end_name}'" + (" (now)" if end is None else ""))
    return start, end


def base_window(given: Window, start_us: int, end_us: int) -> tuple[int, int]:
    """A diff's base window: as given; one bound given, the other at the compared window's length from
    it; neither, the window just before the compared one, as long."""
    length = end_us - start_us
    base_start, base_end = given
    if base_start is not None and base_end is not None:
        return base_start, base_end
    if base_start is not None:
        return base_start, base_start + length
    until = start_us if base_end is None else base_end
    return max(0, until - length), until


def parse_limit(params: QueryParams, default: int, maximum: int) -> int:
    """`limit`: absent or 0 gives the default; above the maximum is capped."""
    value = p.text(params, "limit")
    number = p.parse_int("limit", value, minimum=0) if value else 0
    return min(number, maximum) if number else default


def max_nodes(params: QueryParams) -> int:
    """`maxNodes`: how many frames a tree answer keeps at most (0: all of them)."""
    value = p.text(params, "maxNodes")
    return p.parse_int("maxNodes", value, minimum=0) if value else DEFAULT_MAX_NODES


def profile_query(
    params: QueryParams, now_us: int, need_service: bool = True
) -> tuple[q.ProfileQuery, Window]:
    """The filters a request asks for, and its window as given; `ParamError` for a bad one."""
    trace, span = p.text(params, "traceID"), p.text(params, "spanID")
    service = p.text(params, "service")
    if need_service and service is None and trace is None:
        raise p.ParamError("service", "required unless 'traceID' is given")
    granularity = p.text(params, "granularity") or "function"
    if granularity not in q.GRANULARITIES:
        raise p.ParamError("granularity", f"must be {' or '.join(q.GRANULARITIES)}, got {granularity!r}")
    query = q.ProfileQuery(
        service=service,
        instance=p.text(params, "instance"),
        type=p.text(params, "type") or q.DEFAULT_TYPE,
        trace_id=p.parse_trace_id("traceID", trace.strip()) if trace else None,
        span_id=parse_span_id("spanID", span.strip()) if span else None,
        thread=p.text(params, "thread"),
        granularity="line" if granularity == "line" else "function",
    )
    return query, parse_window(params, "start", "end", now_us)


def envelope(
    root: q.Node, stacks: q.Stacks, query: q.ProfileQuery, start: int, end: int, **extra: Any
) -> bytes:
    """A tree answer's JSON: the tree under `data`, then the type, unit, rows counted and window."""
    rest = {
        "type": query.type,
        "unit": stacks.unit,
        "samples": stacks.rows,
        "start": start,
        "end": end,
        **extra,
    }
    head = json.dumps(rest, ensure_ascii=False)
    return ('{"data":' + q.tree_json(root, diff="baseStart" in extra) + "," + head[1:]).encode("utf-8")


def filename(query: q.ProfileQuery) -> str:
    """The pprof download's file name: `<service>-<type>.pb.gz` (or the trace's id), safe in a header."""
    owner = query.service or (f"trace-{query.trace_id.hex()}" if query.trace_id else "profile")
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{owner}-{query.type}") + ".pb.gz"


def profiles_routes(store: Store) -> list[BaseRoute]:
    """The profiles routes for the query port."""

    async def read(work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        return await run_in_threadpool(store.read, work)

    @guarded
    async def tree(request: Request) -> Response:
        """A flame graph of the filters' samples."""
        now = time.time_ns() // 1000
        wanted, (start, end) = profile_query(request.query_params, now)

        most = max_nodes(request.query_params)

        def work(cursor: duckdb.DuckDBPyConnection) -> bytes:
            query, low, high = q.with_window(cursor, wanted, start, end, now)
            root, stacks = q.flame_tree(cursor, query)
            return envelope(root, stacks, query, low, high, pruned=q.prune(root, most))

        return Response(await read(work), media_type="application/json")

    @guarded
    async def diff(request: Request) -> Response:
        """A flame graph of two windows' samples (the base window's values as `baseSelf`/`baseTotal`)."""
        now = time.time_ns() // 1000
        params = request.query_params
        wanted, (start, end) = profile_query(params, now)
        based = parse_window(params, "baseStart", "baseEnd", None)
        most = max_nodes(params)

        def work(cursor: duckdb.DuckDBPyConnection) -> bytes:
            query, low, high = q.with_window(cursor, wanted, start, end, now)
            since, until = base_window(based, low, high)
            root, stacks, base_stacks = q.diff_tree(
                cursor, query, replace(query, start_us=since, end_us=until)
            )
            extra = {
                "baseStart": since,
                "baseEnd": until,
                "baseSamples": base_stacks.rows,
                "pruned": q.prune(root, most),
            }
            return envelope(root, stacks, query, low, high, **extra)

        return Response(await read(work), media_type="application/json")

    @guarded
    async def top(request: Request) -> Response:
        """The functions with the most self value."""
        now = time.time_ns() // 1000
        wanted, (start, end) = profile_query(request.query_params, now)
        limit = parse_limit(request.query_params, q.DEFAULT_TOP, q.MAX_TOP)

        def work(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            query, _, _ = q.with_window(cursor, wanted, start, end, now)
            return q.top_functions(cursor, query, limit)

        return JSONResponse({"data": await read(work)})

    @guarded
    async def pprof(request: Request) -> Response:
        """The filters' samples as a pprof file."""
        now = time.time_ns() // 1000
        wanted, (start, end) = profile_query(request.query_params, now)

        def work(cursor: duckdb.DuckDBPyConnection) -> bytes:
            query, low, high = q.with_window(cursor, wanted, start, end, now)
            return query_pprof(cursor, query, low, high)

        disposition = f'attachment; filename="{filename(wanted)}"'
        return Response(
            await read(work),
            media_type="application/octet-stream",
            headers={"Content-Disposition": disposition},
        )

    @guarded
    async def traces(request: Request) -> Response:
        """The spans that spent the most in stacks holding a frame."""
        now = time.time_ns() // 1000
        params = request.query_params
        wanted, (start, end) = profile_query(params, now, need_service=False)
        frame = p.text(params, "frame")
        if frame is None:
            raise p.ParamError("frame", "the frame's label is required")
        limit = parse_limit(params, q.DEFAULT_TRACES, q.MAX_TRACES)

        def work(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            query, _, _ = q.with_window(cursor, wanted, start, end, now)
            return q.traces_for_frame(cursor, query, frame, limit)

        return JSONResponse({"data": await read(work)})

    async def services(request: Request) -> Response:
        """Services with stored samples, with their types and instances."""
        return JSONResponse({"data": await read(q.services)})

    return [
        Route("/api/profiles", tree),
        Route("/api/profiles/diff", diff),
        Route("/api/profiles/top", top),
        Route("/api/profiles/pprof", pprof),
        Route("/api/profiles/traces", traces),
        Route("/api/profiles/services", services),
    ]
