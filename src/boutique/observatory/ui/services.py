"""The Services pages: the service dependency graph (`/dependencies`) and one service's RED charts.

Both are drawn on the server as inline SVG from the store, fresh for the chosen window: the graph from
parent/child spans (`Store.dependencies`), laid out by `graph_layout`; the charts (request rate, error
rate, p50/p95/p99 latency) from per-step figures (`Store.red`) of the service's server spans. When the
observatory knows the shop's flag file, every flag change in the window is a marker on the charts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.flags import Change, FlagFile, FlagFileError
from boutique.observatory.model import KIND_NAMES, KIND_NUMBERS, Span
from boutique.observatory.store.base import Dependency, RedPoint, Store, TraceQuery
from boutique.observatory.ui import charts
from boutique.observatory.ui.chaos_log import Action, read_actions
from boutique.observatory.ui.graph_layout import layered_layout, smooth_path
from boutique.observatory.ui.pages import duration, render, service_colour
from boutique.observatory.ui.timefmt import (
    DEFAULT_LOOKBACK,
    LOOKBACK_LABELS,
    LOOKBACKS,
    ago,
    now_us,
    utc_text,
)

# The lookbacks these pages offer (5m would leave 60 chart points 5s apart): name → label.
PAGE_LOOKBACKS = {name: LOOKBACK_LABELS[name] for name in ("15m", "1h", "6h", "24h")}
CHART_POINTS = 60
QUANTILES = (0.5, 0.95, 0.99)
ERROR_TRACES = 10
ENTRY_KINDS = (KIND_NUMBERS["server"], KIND_NUMBERS["consumer"])  # spans that are a service's requests


LATENCY_COLOURS = {0.5: "#2e9e6b", 0.95: "#d9822b", 0.99: "#c62828"}


class BadParameter(ValueError):
    """A query parameter the page cannot use; its message is shown to the user with a 400."""


def parse_lookback(request: Request) -> str:
    """The `lookback` parameter (one of PAGE_LOOKBACKS; the default when absent or empty)."""
    value = request.query_params.get("lookback") or DEFAULT_LOOKBACK
    if value not in PAGE_LOOKBACKS:
        raise BadParameter(f"lookback must be one of {', '.join(PAGE_LOOKBACKS)}, not {value!r}")
    return value


def service_href(service: str) -> str:
    """The page of a service."""
    return "/services/" + quote(service, safe="")


def count_text(number: int) -> str:
    """A count with thousands separators."""
    return f"{number:,}"


def percent_text(part: int, whole: int) -> str:
    """`part` as a share of `whole`: 0%, <0.1%, 2.5%, 100%."""
    if not part or not whole:
        return "0%"
    share = 100 * part / whole
    if share < 0.1:
        return "<0.1%"
    return f"{share:.1f}".removesuffix(".0") + "%"


def step_text(step_us: int) -> str:
    """A chart step as a person reads it: 15s, 1m, 6m."""
    seconds = step_us // 1_000_000
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


# ---- the dependency graph ------------------------------------------------------------------------

NODE_HEIGHT = 34.0
NODE_CHAR = 7.6  # estimated width of a character of a node name (13px)
LABEL_CHAR = 6.2  # … of an edge label (11px)


@dataclass(frozen=True)
class DrawnNode:
    """A service box of the graph: where, its colour and link, and what a screen reader says."""

    name: str
    href: str
    colour: str
    x: float
    y: float
    width: float
    height: float
    description: str


@dataclass(frozen=True)
class DrawnEdge:
    """A call edge of the graph and its row in the table: counts, text, path, tone and width."""

    parent: str
    child: str
    parent_href: str
    child_href: str
    parent_colour: str
    child_colour: str
    calls: int
    errors: int
    calls_text: str
    errors_text: str
    percent: str
    label: str
    path: str
    label_x: float
    label_y: float
    label_width: float
    tone: str  # ok, warn or bad, by error rate
    stroke: float


@dataclass(frozen=True)
class Graph:
    """The whole drawing of the dependency graph."""

    width: float
    height: float
    nodes: list[DrawnNode]
    edges: list[DrawnEdge]
    calls: int


def edge_tone(calls: int, errors: int) -> str:
    """How alarming an edge's error rate is: ok (under 1%), warn (under 5%) or bad."""
    rate = errors / calls if calls else 0.0
    return "ok" if rate < 0.01 else "warn" if rate < 0.05 else "bad"


def dependency_graph(dependencies: Sequence[Dependency]) -> Graph:
    """Lay out and describe the graph of the calls between services."""
    names = sorted({d.parent for d in dependencies} | {d.child for d in dependencies})
    calls_in = {name: 0 for name in names}
    calls_out = {name: 0 for name in names}
    for d in dependencies:
        calls_out[d.parent] += d.calls
        calls_in[d.child] += d.calls
    labels = [f"{count_text(d.calls)} calls · {percent_text(d.errors, d.calls)} errors" for d in dependencies]
    layout = layered_layout(
        names,
        [(d.parent, d.child) for d in dependencies],
        {name: (max(80.0, NODE_CHAR * len(name) + 30), NODE_HEIGHT) for name in names},
        [(LABEL_CHAR * len(label) + 10, 15.0) for label in labels],
    )
    busiest = max((d.calls for d in dependencies), default=1)
    edges = []
    for route in layout.edges:
        d = dependencies[route.index]
        label = labels[route.index]
        weight = math.log1p(d.calls) / math.log1p(busiest) if busiest > 0 else 0.0
        edges.append(
            DrawnEdge(
                parent=d.parent,
                child=d.child,
                parent_href=service_href(d.parent),
                child_href=service_href(d.child),
                parent_colour=service_colour(d.parent),
                child_colour=service_colour(d.child),
                calls=d.calls,
                errors=d.errors,
                calls_text=count_text(d.calls),
                errors_text=count_text(d.errors),
                percent=percent_text(d.errors, d.calls),
                label=label,
                path=smooth_path(route.points),
                label_x=route.label[0],
                label_y=route.label[1],
                label_width=LABEL_CHAR * len(label) + 10,
                tone=edge_tone(d.calls, d.errors),
                stroke=round(1.2 + 3.3 * weight, 2),
            )
        )
    boxes = sorted(layout.nodes.values(), key=lambda box: (box.layer, box.y))  # tab order: column by column
    nodes = [
        DrawnNode(
            name=box.name,
            href=service_href(box.name),
            colour=service_colour(box.name),
            x=box.x - box.width / 2,
            y=box.y - box.height / 2,
            width=box.width,
            height=box.height,
            description=(
                f"{box.name}: {count_text(calls_in[box.name])} calls in, "
                f"{count_text(calls_out[box.name])} calls out"
            ),
        )
        for box in boxes
    ]
    return Graph(layout.width, layout.height, nodes, edges, sum(d.calls for d in dependencies))


# ---- one service's RED figures -----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The charted time range: CHART_POINTS steps of `step_us` ending at `end_us` (a whole step)."""

    lookback: str
    start_us: int
    end_us: int
    step_us: int

    @classmethod
    def ending_now(cls, lookback: str, now: int) -> Window:
        """The window of a lookback, its end rounded up to a whole step so steps stay put between loads."""
        step = LOOKBACKS[lookback] // CHART_POINTS
        end = -(-now // step) * step
        return cls(lookback, end - CHART_POINTS * step, end, step)

    @property
    def times(self) -> list[int]:
        """The end of every step: where each chart point sits."""
        return [self.start_us + k * self.step_us for k in range(1, CHART_POINTS + 1)]


@dataclass(frozen=True)
class OperationRow:
    """An operation of the service with its calls and errors in the window."""

    name: str
    href: str
    calls: int
    errors: int
    percent: str


@dataclass(frozen=True)
class ErrorTrace:
    """A recent trace in which the service failed."""

    trace_id: str
    href: str
    root: str
    failed: str
    message: str
    duration_us: int
    spans: int
    started: str
    started_utc: str


def kinds_to_chart(kinds: set[int]) -> tuple[int, ...]:
    """Which span kinds stand for the service's requests: server/consumer, or whatever it has instead."""
    chosen = tuple(k for k in ENTRY_KINDS if k in kinds)
    return chosen or tuple(sorted(kinds))


def kind_text(kinds: Sequence[int]) -> str:
    """`server spans`, `server and consumer spans`…"""
    names = [KIND_NAMES.get(k, str(k)) for k in kinds]
    return (" and ".join(names) if names else "no") + " spans"


def flag_events(changes: Sequence[Change]) -> list[charts.Event]:
    """Flag changes as chart events: `adFailure → on`, and what, from what, under which rule and by whom."""
    events = []
    for change in changes:
        at_us = int(change.time * 1_000_000)
        rule = f" when {change.rule}" if change.rule else ""
        tooltip = (
            f"{charts.clock(at_us, seconds=True)} UTC · flag {change.flag}: {change.previous} → "
            f"{change.variant}{rule}, by {change.by}"
        )
        events.append(charts.Event(at_us, f"{change.flag} → {change.variant}", tooltip))
    return events


def red_charts(
    points: Sequence[RedPoint], window: Window, events: Sequence[charts.Event] = ()
) -> list[charts.LineChart]:
    """The three charts of one series of per-step figures: request rate, error rate, latency quantiles."""
    by_time = {p.timestamp_us: p for p in points}
    times = window.times
    seconds = window.step_us / 1e6
    steps = [by_time.get(t) for t in times]
    rate = [(p.calls / seconds if p else 0.0) for p in steps]
    errors = [(100 * p.errors / p.calls if p and p.calls else None) for p in steps]
    latency = [
        charts.Series(
            f"p{round(q * 100)}",
            LATENCY_COLOURS[q],
            [p.quantiles.get(q) if p else None for p in steps],
        )
        for q in QUANTILES
    ]
    return [
        charts.line_chart(
            "rate",
            "Request rate",
            times,
            [charts.Series("requests/s", "#2f5bd3", rate)],
            rate_text,
            events=events,
        ),
        charts.line_chart(
            "errors",
            "Error rate",
            times,
            [charts.Series("errors", "#c62828", errors)],
            error_text,
            events=events,
        ),
        charts.line_chart("latency", "Latency", times, latency, latency_text, events=events),
    ]


def rate_text(value: float) -> str:
    """A request rate per second, to three significant digits."""
    return f"{value:.3g}/s"


def error_text(value: float) -> str:
    """An error percentage."""
    return f"{value:.3g}%"


def latency_text(ms: float) -> str:
    """A latency given in milliseconds, as a duration (plain 0 for none)."""
    return duration(ms * 1000) if ms else "0"


def error_trace(spans: Sequence[Span], service: str, now: int) -> ErrorTrace:
    """What the list of error traces shows of one trace."""
    ids = {s.span_id for s in spans}
    root = next((s for s in spans if not s.parent_id or s.parent_id not in ids), spans[0])
    failed = next((s for s in spans if s.service == service and s.is_error), None) or next(
        (s for s in spans if s.is_error), root
    )
    start = min(s.start_us for s in spans)
    return ErrorTrace(
        trace_id=root.trace_id,
        href=f"/trace/{root.trace_id}",
        root=f"{root.service}: {root.operation}",
        failed=failed.operation,
        message=failed.status_message,
        duration_us=max(s.end_us for s in spans) - start,
        spans=len(spans),
        started=ago(now - start),
        started_utc=utc_text(start),
    )


# ---- the pages ---------------------------------------------------------------------------------


@dataclass
class ServicePages:
    """The handlers of the Services section over one store (and the flag file whose changes it marks)."""

    store: Store
    flags_file: Path | None = None
    chaos_log: Path | None = None  # `boutique chaos`'s log, whose actions on the service are marked too
    _flags: FlagFile | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._flags = FlagFile(self.flags_file) if self.flags_file else None

    def flag_changes(self, window: Window) -> list[Change]:
        """The flag changes inside the window (none without a flag file, or when it cannot be read)."""
        if self._flags is None:
            return []
        try:
            changes = self._flags.history(since=window.start_us / 1e6)
        except (OSError, FlagFileError):
            return []
        return [c for c in changes if c.time * 1e6 <= window.end_us]

    def chaos_actions(self, service: str, window: Window) -> list[Action]:
        """The process faults made on the service's instances inside the window (none without a log)."""
        if self.chaos_log is None:
            return []
        return read_actions(self.chaos_log, service, window.start_us / 1e6, window.end_us / 1e6)

    async def services(self, request: Request) -> Response:
        """`/services`: the section's front page is the dependency graph."""
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/dependencies{query}", status_code=307)

    async def dependencies(self, request: Request) -> Response:
        """`/dependencies?lookback=`: the graph of calls between services, with a table of its edges."""
        context: dict[str, Any] = {"lookbacks": PAGE_LOOKBACKS, "lookback": DEFAULT_LOOKBACK, "error": None}
        try:
            lookback = context["lookback"] = parse_lookback(request)
        except BadParameter as exc:
            context["error"] = str(exc)
            return render(request, "dependencies.html", "services", context, status=400)
        end = now_us()

        def load() -> tuple[list[Dependency], list[str]]:
            """The calls in the window and every known service (one trip to a worker thread)."""
            return self.store.dependencies(end - LOOKBACKS[lookback], end), self.store.services()

        found, services = await run_in_threadpool(load)
        context["graph"] = dependency_graph(found)
        context["services"] = [(name, service_href(name), service_colour(name)) for name in services]
        context["window_text"] = LOOKBACK_LABELS[lookback].lower()
        return render(request, "dependencies.html", "services", context)

    async def service(self, request: Request) -> Response:
        """`/services/{service}?lookback=&operation=`: RED charts, operations and recent error traces."""
        service = request.path_params["service"]
        if not service:
            return RedirectResponse("/dependencies", status_code=307)
        context: dict[str, Any] = {
            "service": service,
            "colour": service_colour(service),
            "lookbacks": PAGE_LOOKBACKS,
            "lookback": DEFAULT_LOOKBACK,
            "operation": "",
            "operations": [],
            "error": None,
        }
        try:
            lookback = context["lookback"] = parse_lookback(request)
        except BadParameter as exc:
            context["error"] = str(exc)
            return render(request, "service.html", "services", context, status=400)
        operation = context["operation"] = request.query_params.get("operation", "")
        now = now_us()
        window = Window.ending_now(lookback, now)
        found = await run_in_threadpool(self._load, service, operation, window)
        changes = await run_in_threadpool(self.flag_changes, window)
        faults = await run_in_threadpool(self.chaos_actions, service, window)
        if found is None:
            context["error"] = f"No spans of a service named {service!r} are stored."
            return render(request, "service.html", "services", context, status=404)
        kinds, operations, rows, points, traces = found
        context["operations"] = operations
        if operation and operation not in operations:
            context["error"] = f"{service} has no operation named {operation!r}."
            return render(request, "service.html", "services", context, status=400)

        def href(name: str) -> str:
            """This page for one operation, keeping the time range."""
            return "?" + urlencode({"lookback": lookback, "operation": name})

        context.update(
            kinds=kind_text(kinds),
            window_text=LOOKBACK_LABELS[lookback].lower(),
            step_text=step_text(window.step_us),
            charts=red_charts(
                points,
                window,
                sorted([*flag_events(changes), *(a.event() for a in faults)], key=lambda e: e.time_us),
            ),
            flag_changes=len(changes),
            chaos_actions=len(faults),
            rows=[
                OperationRow(name, href(name), calls, errors, percent_text(errors, calls))
                for name, calls, errors in rows
            ],
            traces=[error_trace(spans, service, now) for spans in traces if spans],
        )
        return render(request, "service.html", "services", context)

    def _load(
        self, service: str, operation: str, window: Window
    ) -> (
        tuple[tuple[int, ...], list[str], list[tuple[str, int, int]], list[RedPoint], list[list[Span]]] | None
    ):
        """Everything the service page reads from the store (None when the service is unknown)."""
        pairs = self.store.operations(service)
        if not pairs and service not in self.store.services():
            return None
        kinds = kinds_to_chart({kind for _, kind in pairs})
        operations = sorted({name for name, kind in pairs if kind in kinds})
        args = ([service], window.start_us, window.end_us, window.step_us, QUANTILES)
        per_operation = self.store.red(*args, True, kinds)
        totals: dict[str, list[int]] = {name: [0, 0] for name in operations}
        for point in per_operation:
            total = totals.setdefault(point.operation, [0, 0])
            total[0] += point.calls
            total[1] += point.errors
        rows = sorted(((n, c, e) for n, (c, e) in totals.items()), key=lambda row: (-row[1], row[0]))
        if operation:
            points = [p for p in per_operation if p.operation == operation]
        else:
            points = self.store.red(*args, False, kinds)
        query = TraceQuery(
            service=service,
            start_us=window.start_us,
            end_us=window.end_us,
            errors_only=True,
            limit=ERROR_TRACES,
        )
        return kinds, operations, rows, points, self.store.search(query)


def routes(store: Store, flags_file: Path | None = None, chaos: Path | None = None) -> list[BaseRoute]:
    """The Services section's routes: the dependency graph and the page of each service."""
    pages = ServicePages(store, flags_file, chaos)
    return [
        Route("/dependencies", pages.dependencies),
        Route("/services", pages.services),
        Route("/services/{service:path}", pages.service),
    ]
