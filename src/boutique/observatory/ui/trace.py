"""The trace page, `/trace/{trace_id}`: a header, find-in-trace, and the waterfall of spans with details.

The server does the work once: it reads the trace, orders the spans depth first, counts children and
descendants, indexes services, computes the critical path and the warnings, and embeds it all in the
page as one compact JSON block. `static/trace.js` then draws only the rows near the viewport, so a
trace of ten thousand spans loads and scrolls as quickly as a small one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api.jaeger import skew_warnings
from boutique.observatory.api.params import ParamError, parse_trace_id
from boutique.observatory.model import KIND_NAMES, Span
from boutique.observatory.otlp.values import jsonable
from boutique.observatory.store.base import Store
from boutique.observatory.ui.critical_path import critical_path, main_root
from boutique.observatory.ui.pages import render

# The columns of each span row in the embedded JSON, in order (trace.js reads them by these names).
FIELDS = (
    "id",  # span id
    "parent",  # row index of the parent, -1 for a root
    "orphanOf",  # parent span id when the parent is not shown as this row's parent (missing, or a loop)
    "depth",
    "service",  # index into `services`
    "operation",
    "kind",  # OTLP number; `kinds` names it
    "start",  # µs after the trace's start
    "duration",  # µs
    "status",  # 0 unset, 1 ok, 2 error
    "message",  # status message
    "critical",  # 1 when some of the span is on the critical path
    "children",
    "descendants",
    "instance",  # index into `instances`
    "resource",  # index into `resources`
    "scope",  # index into `scopes`
    "attributes",
    "events",  # [µs after the span's start, name, attributes]
    "links",  # [trace id, span id, attributes]
    "warnings",
)
TICKS = 5  # time-axis labels: 0, ¼, ½, ¾ and the whole duration


@dataclass
class TreeOrder:
    """Spans depth first (children by start time), with each row's parent row, depth and warnings."""

    spans: list[Span] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    warnings: dict[str, list[str]] = field(default_factory=dict)


def tree_order(spans: Sequence[Span]) -> TreeOrder:
    """The spans in tree order; repeated span ids keep the first copy, a loop of parents is cut open."""
    by_id: dict[str, Span] = {}
    out = TreeOrder()
    for span in spans:
        if span.span_id in by_id:
            out.warnings.setdefault(span.span_id, []).append(
                "span id stored more than once; the first is shown"
            )
        else:
            by_id[span.span_id] = span
    children: dict[str, list[Span]] = {}
    for span in by_id.values():
        if span.parent_id in by_id and span.parent_id != span.span_id:
            children.setdefault(span.parent_id, []).append(span)
    for kids in children.values():
        kids.sort(key=lambda s: (s.start_us, s.span_id))
    ordered = sorted(by_id.values(), key=lambda s: (s.start_us, s.span_id))
    roots = [s for s in ordered if s.parent_id not in by_id or s.parent_id == s.span_id]
    placed: dict[str, int] = {}

    def place(root: Span) -> None:
        """Append the root and everything under it, depth first, skipping spans already placed."""
        stack: list[tuple[Span, int, int]] = [(root, -1, 0)]
        while stack:
            span, parent, depth = stack.pop()
            if span.span_id in placed:
                continue
            placed[span.span_id] = len(out.spans)
            out.spans.append(span)
            out.parents.append(parent)
            out.depths.append(depth)
            row = placed[span.span_id]
            stack.extend((kid, row, depth + 1) for kid in reversed(children.get(span.span_id, ())))

    for root in roots:
        if root.parent_id == root.span_id:
            out.warnings.setdefault(root.span_id, []).append(
                "names itself as its own parent; shown as a root"
            )
        elif root.parent_id:
            out.warnings.setdefault(root.span_id, []).append(
                f"parent span {root.parent_id} is not in this trace (not received, or dropped)"
            )
        place(root)
    for span in ordered:  # only spans in a loop of parents are left
        if span.span_id not in placed:
            out.warnings.setdefault(span.span_id, []).append(
                "its parent chain loops back to it; shown as a root"
            )
            place(span)
    return out


_SIMPLE = frozenset((str, int, bool, type(None)))


def plain(value: Any) -> Any:
    """A value JSON can carry and JavaScript can parse: bytes as base64, NaN and infinities as text."""
    kind = type(value)
    if kind in _SIMPLE:
        return value
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        if all(type(v) in _SIMPLE for v in value.values()):
            return value  # the common case: nothing to convert
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return jsonable(value)


class _Index:
    """Distinct values numbered in order of first appearance (services, instances, resources, scopes)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._numbers: dict[Any, int] = {}

    def number(self, value: Any) -> int:
        """The value's number, adding it when new (dicts compare by their items)."""
        key: Any = value
        if isinstance(value, dict):
            key = tuple(value.items())
            try:
                hash(key)
            except TypeError:  # a list or map among the values
                key = json.dumps(value, sort_keys=True, default=str)
        found = self._numbers.get(key)
        if found is None:
            found = self._numbers[key] = len(self.values)
            self.values.append(value)
        return found


def page_data(spans: Sequence[Span]) -> dict[str, Any]:
    """Everything the page shows of a trace (non-empty), ready to embed as JSON."""
    tree = tree_order(spans)
    rows = tree.spans
    start = min(s.start_us for s in rows)
    end = max(s.end_us for s in rows)
    path = critical_path(rows)
    on_path = {segment.span_id for segment in path}
    skewed = skew_warnings(rows)
    children = [0] * len(rows)
    descendants = [0] * len(rows)
    for row in range(len(rows) - 1, -1, -1):
        parent = tree.parents[row]
        if parent >= 0:
            children[parent] += 1
            descendants[parent] += 1 + descendants[row]
    services, instances, resources, scopes = _Index(), _Index(), _Index(), _Index()
    row_of: dict[str, int] = {}
    out_rows = []
    for row, span in enumerate(rows):
        row_of[span.span_id] = row
        parent = tree.parents[row]
        instance = span.instance or str(span.resource.get("service.instance.id", ""))
        scope = f"{span.scope_name} {span.scope_version}".strip()
        out_rows.append(
            [
                span.span_id,
                parent,
                span.parent_id if parent < 0 else "",
                tree.depths[row],
                services.number(span.service),
                span.operation,
                span.kind,
                span.start_us - start,
                span.duration_us,
                span.status,
                span.status_message,
                1 if span.span_id in on_path else 0,
                children[row],
                descendants[row],
                instances.number(instance),
                resources.number(plain(span.resource)),
                scopes.number(scope),
                plain(span.attributes),
                [[e.time_us - span.start_us, e.name, plain(e.attributes)] for e in span.events],
                [[link.trace_id, link.span_id, plain(link.attributes)] for link in span.links],
                [*span.warnings, *tree.warnings.get(span.span_id, ()), *skewed.get(span.span_id, ())],
            ]
        )
    root = main_root([span for row, span in enumerate(rows) if tree.parents[row] < 0])
    return {
        "traceId": rows[0].trace_id,
        "root": row_of[root.span_id] if root else 0,
        "start": start,
        "duration": end - start,
        "services": services.values,
        "instances": instances.values,
        "resources": resources.values,
        "scopes": scopes.values,
        "kinds": {str(number): name for number, name in KIND_NAMES.items()},
        "fields": list(FIELDS),
        "spans": out_rows,
        "critical": [[row_of[s.span_id], s.start_us - start, s.end_us - start] for s in path],
    }


def embed(data: Any) -> Markup:
    """JSON for a `<script type="application/json">` block: compact, and unable to close the block."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def header(data: dict[str, Any]) -> dict[str, Any]:
    """The facts above the waterfall: root, start, duration, counts, services with their span counts."""
    root = data["spans"][data["root"]]
    counts = [0] * len(data["services"])
    for row in data["spans"]:
        counts[row[FIELDS.index("service")]] += 1
    started = datetime.fromtimestamp(data["start"] / 1e6, UTC)
    duration = data["duration"]
    return {
        "trace_id": data["traceId"],
        "root_service": data["services"][root[FIELDS.index("service")]],
        "root_operation": root[FIELDS.index("operation")],
        "start_iso": started.isoformat(),
        "start_text": started.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC",
        "duration_us": duration,
        "span_count": len(data["spans"]),
        "error_count": sum(1 for row in data["spans"] if row[FIELDS.index("status")] == 2),
        "depth": 1 + max(row[FIELDS.index("depth")] for row in data["spans"]),
        "services": list(zip(data["services"], counts, strict=True)),
        "ticks": [(100 * i / (TICKS - 1), duration * i / (TICKS - 1)) for i in range(TICKS)],
    }


def routes(store: Store) -> list[BaseRoute]:
    """The trace page's routes."""

    async def page(request: Request) -> Response:
        """`GET /trace/{trace_id}`: the page, 400 for a malformed id, 404 for an unknown one."""
        raw = request.path_params["trace_id"]
        try:
            trace_id = parse_trace_id("trace id", raw)
        except ParamError:
            return _problem(request, raw, "Not a trace id: a trace id is 1 to 32 hexadecimal digits.", 400)

        def load() -> dict[str, Any] | None:
            """The page's facts and embedded data (blocking: the store, then the preparation)."""
            found = store.traces([trace_id])
            if not found or not found[0]:
                return None
            data = page_data(found[0])
            return {**header(data), "data": embed(data)}

        facts = await run_in_threadpool(load)
        if facts is None:
            return _problem(request, raw, f"No trace with id {raw} is stored (it may have expired).", 404)
        title = f"Trace {facts['root_service']}: {facts['root_operation']}"
        return render(request, "trace.html", "search", {**facts, "title": title, "message": ""})

    return [Route("/trace/{trace_id}", page)]


def _problem(request: Request, raw: str, message: str, status: int) -> Response:
    """The trace page saying what is wrong instead of showing a trace."""
    return render(
        request, "trace.html", "search", {"title": "Trace", "message": message, "raw_id": raw}, status
    )
