"""The logs query API (JSON under `/api/`), over the store's `read`.

- `GET /api/logs?service=&minSeverity=&q=&tags=&traceID=&spanID=&start=&end=&limit=` → `{"data": [record]}`,
  newest first. `minSeverity` is a name (TRACE, DEBUG, INFO, WARN, ERROR, FATAL, any case; also WARNING,
  CRITICAL and the numbered INFO2 ...) or an OTLP severity number 0-24; `q` a substring of the body, any
  case; `tags` a JSON object of attribute or resource attribute values (strings, numbers, booleans);
  `start`/`end` Unix µs; `limit` default 100, at most 1000.
- `GET /api/logs/tail?` (the same filters) → Server-Sent Events: each record stored after the request
  began as `data: <record>`, in time order, polled every half second; the last record of each poll
  carries an `id:` so that a reconnecting EventSource (`Last-Event-ID`) goes on where it stopped; a
  `: keep-alive` comment after 15 s without a record.
- `GET /api/logs/services` → `{"data": [service, ...]}`, the services with stored records.

A record is `{time, observedTime, service, instance, severity, severityNumber, body, attributes,
resource, scope, traceID, spanID}`; a bad parameter is a 400 with the Jaeger error envelope.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.logs import query as q
from boutique.observatory.logs.model import MAX_SEVERITY, severity_name
from boutique.observatory.sse import event_stream
from boutique.observatory.store.base import Store

POLL_SECONDS = 0.5
KEEP_ALIVE_SECONDS = 15.0
MAX_TAILS = 32  # live tails served at once (each polls the store)
SEVERITIES = {
    **{name: number for number in range(1, MAX_SEVERITY + 1) if (name := severity_name(number))},
    "WARNING": 13,
    "CRITICAL": 21,
}
_SPAN_HEX = re.compile(r"[0-9a-fA-F]{1,16}")


def parse_severity(name: str, value: str) -> int:
    """A severity name (any case) or an OTLP severity number, as the number."""
    text = value.strip()
    if text.isdigit():
        return p.parse_int(name, text, minimum=0, maximum=MAX_SEVERITY)
    number = SEVERITIES.get(text.upper().removeprefix("SEVERITY_NUMBER_"))
    if number is None:
        raise p.ParamError(
            name, f"unknown severity {value!r}; TRACE, DEBUG, INFO, WARN, ERROR, FATAL or 0-24"
        )
    return number


def parse_span_id(name: str, value: str) -> bytes:
    """A span id of 1 to 16 hex digits, left-padded with zeros to 8 bytes."""
    if not _SPAN_HEX.fullmatch(value):
        raise p.ParamError(name, f"a span id is 1 to 16 hexadecimal digits, got {value!r}")
    return bytes.fromhex(value.rjust(16, "0"))


def log_query(params: QueryParams) -> q.LogQuery:
    """The query a request's parameters ask for; `ParamError` for a bad one."""
    severity, tags, trace, span = (p.text(params, n) for n in ("minSeverity", "tags", "traceID", "spanID"))
    start, end = (p.text(params, n) for n in ("start", "end"))
    start_us = p.parse_int("start", start, minimum=0) if start else None
    end_us = p.parse_int("end", end, minimum=0) if end else None
    if start_us is not None and end_us is not None and start_us > end_us:
        raise p.ParamError("start", "must not be after 'end'")
    limit = p.text(params, "limit")
    count = p.parse_int("limit", limit, minimum=0) if limit else 0
    return q.LogQuery(
        service=p.text(params, "service"),
        min_severity=parse_severity("minSeverity", severity) if severity else None,
        text=p.text(params, "q"),
        tags=tuple((c.key, c.value) for c in p.parse_tags_json("tags", tags)) if tags else (),
        trace_id=p.parse_trace_id("traceID", trace.strip()) if trace else None,
        span_id=parse_span_id("spanID", span.strip()) if span else None,
        start_us=start_us,
        end_us=end_us,
        limit=min(count, q.MAX_LIMIT) if count else q.DEFAULT_LIMIT,
    )


def logs_routes(store: Store) -> list[BaseRoute]:
    """The logs routes for the query port."""
    tails = 0

    async def search(request: Request) -> Response:
        """Records meeting the filters, newest first."""
        try:
            wanted = log_query(request.query_params)
        except p.ParamError as exc:
            return p.error_response(400, str(exc))
        found = await run_in_threadpool(store.read, lambda cursor: q.find(cursor, wanted))
        return JSONResponse({"data": found})

    async def services(request: Request) -> Response:
        """Services with stored records, sorted."""
        return JSONResponse({"data": await run_in_threadpool(store.read, q.services)})

    async def tail(request: Request) -> Response:
        """Records stored from now on, as Server-Sent Events."""
        try:
            wanted = log_query(request.query_params)
            resume = request.headers.get("last-event-id", "").strip()
            after = p.parse_int("Last-Event-ID", resume, minimum=0) if resume else None
        except p.ParamError as exc:
            return p.error_response(400, str(exc))
        if tails >= MAX_TAILS:
            return p.error_response(503, f"{MAX_TAILS} live tails are open already; try again later")
        start = after if after is not None else await run_in_threadpool(store.read, q.last_stored)

        async def events() -> AsyncIterator[str]:
            nonlocal tails
            tails += 1  # counted while the stream runs (a response never started never counts)
            try:
                async for event in _events(request, store, wanted, start):
                    yield event
            finally:
                tails -= 1

        return event_stream(events())

    return [
        Route("/api/logs", search),
        Route("/api/logs/services", services),
        Route("/api/logs/tail", tail),
    ]


async def _events(request: Request, store: Store, wanted: q.LogQuery, after: int) -> AsyncIterator[str]:
    """One tail's event stream: what each poll finds, in time order, and keep-alive comments."""
    yield ": tail started\n\n"  # the headers and a first line go out at once
    quiet_since = time.monotonic()
    while not await request.is_disconnected():
        await asyncio.sleep(POLL_SECONDS)

        def poll(cursor: Any, since: int = after) -> tuple[list[dict[str, Any]], int, int]:
            return q.stored_since(cursor, wanted, since)

        found, after, more = await run_in_threadpool(store.read, poll)
        if more:
            yield f": {more} more records were stored in the last poll; the newest {len(found)} follow\n\n"
        for index, record in enumerate(found):
            event_id = f"id: {after}\n" if index == len(found) - 1 else ""
            yield f"{event_id}data: {json.dumps(record, ensure_ascii=False)}\n\n"
        if found:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
