"""The search page: find traces with the query API's own parameters, shown as a scatter plot and a table.

The page is a GET form, so every search is a URL. Its parameters are those of `GET /api/traces` (parsed
by `boutique.observatory.api.params`, so the page and the API agree), plus three of the page's own:
`conditions` (several tag conditions in one text field, each in `tagQuery` syntax), and `from`/`to`
(UTC times from the browser's date-time fields, standing for `start`/`end` in µs). The page's defaults
differ from the API's only where a person searching differs from a program: 20 traces, the last hour.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.api.jaeger import jaeger_id
from boutique.observatory.model import Span
from boutique.observatory.store.base import Store, TagCondition, TraceQuery
from boutique.observatory.ui.pages import duration, render
from boutique.observatory.ui.timefmt import DEFAULT_LOOKBACK, LOOKBACK_LABELS, ago, now_us, utc_text

DEFAULT_LIMIT = "20"
LOOKBACK_OPTIONS = [*LOOKBACK_LABELS.items(), ("custom", "Custom (from / to)")]
SORTS = (("start", "Newest first"), ("duration", "Longest first"))
TAG_PARAMS = ("tags", "tag", "tagQuery")
HIDDEN_PARAMS = ("spanKind", "instance")  # API parameters the form keeps without showing a field
OP_TEXT = {"=": "=", "!=": "!=", "prefix": "^=", "regex": "~="}

# Which form field a bad parameter belongs to, and what the form calls it.
FIELDS = {
    "conditions": "conditions", "tagQuery": "conditions", "tags": "conditions", "tag": "conditions",
    "minDuration": "minDuration", "maxDuration": "maxDuration", "lookback": "lookback",
    "from": "from", "start": "from", "to": "to", "end": "to", "limit": "limit", "errors": "errors",
    "sortBy": "sortBy",
}  # fmt: skip
LABELS = {
    "conditions": "Tags", "minDuration": "Min duration", "maxDuration": "Max duration",
    "lookback": "Lookback", "from": "From", "to": "To", "limit": "Limit", "errors": "Errors only",
    "sortBy": "Sort",
}  # fmt: skip

_LOCAL_MINUTES = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_ZONE = re.compile(r"([Zz]|[+-]\d{2}:\d{2})$")


# ---- from the form to the API's parameters -----------------------------------------------------


def split_conditions(text: str) -> list[str]:
    """Whitespace-separated conditions; quotes group a value holding spaces, backslashes stay as typed."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""  # regular expressions keep their backslashes
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as exc:
        raise p.ParamError("conditions", f"{exc} in {text!r}") from None


def condition_text(condition: TagCondition) -> str:
    """A condition as it is typed in the form, quoted when it holds spaces or quotes."""
    term = f"{condition.key}{OP_TEXT[condition.op]}{condition.value}"
    return shlex.quote(term) if re.search(r"[\s'\"]", term) else term


def parse_utc(name: str, value: str) -> int:
    """A time from a date-time field (`2024-05-01T12:00[:00]`, UTC unless it names a zone) in µs."""
    raw = value.strip()
    if _LOCAL_MINUTES.fullmatch(raw):
        raw += ":00"
    if not _ZONE.search(raw):
        raw += "Z"
    return p.parse_rfc3339_us(name, raw)


def utc_field(timestamp_us: int) -> str:
    """µs as a date-time field's value (UTC, to the second)."""
    return datetime.fromtimestamp(timestamp_us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def api_params(params: QueryParams) -> QueryParams:
    """The page's parameters as `GET /api/traces` takes them (raises `ParamError` for a bad page field)."""
    own = ("conditions", "from", "to", "limit", "lookback")
    items = [(k, v) for k, v in params.multi_items() if k not in own]
    for text in p.values(params, "conditions"):
        items.extend(("tagQuery", term) for term in split_conditions(text))
    for name, api_name in (("from", "start"), ("to", "end")):
        value = p.text(params, name)
        if value is not None:
            items = [(k, v) for k, v in items if k != api_name]
            items.append((api_name, str(parse_utc(name, value))))
    items.append(("limit", p.text(params, "limit") or DEFAULT_LIMIT))
    lookback = params.get("lookback")
    if lookback is None:  # absent: the default; present but empty: no lower bound, as in the API
        lookback = "" if p.text(params, "start") or p.text(params, "from") else DEFAULT_LOOKBACK
    items.append(("lookback", lookback))
    return QueryParams(items)


# ---- what the form shows -----------------------------------------------------------------------


@dataclass
class FilterForm:
    """The fields the search and logs forms share: service, time range and limit, as shown."""

    service: str = ""
    lookback: str = DEFAULT_LOOKBACK
    from_: str = ""
    to: str = ""
    limit: str = DEFAULT_LIMIT


def shown_times(params: QueryParams) -> tuple[str, str]:
    """The From and To fields: as submitted, else `start`/`end` in µs as date-time values."""
    start, end = p.text(params, "start"), p.text(params, "end")
    from_ = p.text(params, "from") or (utc_field(int(start)) if start and start.isdigit() else "")
    to = p.text(params, "to") or (utc_field(int(end)) if end and end.isdigit() else "")
    return from_, to


@dataclass
class Form(FilterForm):
    """The values the form shows: those submitted, or the defaults."""

    operation: str = ""
    conditions: str = ""
    min_duration: str = ""
    max_duration: str = ""
    errors: bool = False
    sort_by: str = "start"
    hidden: list[tuple[str, str]] = field(default_factory=list)


def form_values(params: QueryParams, query: TraceQuery | None) -> Form:
    """The form as submitted; tag parameters given in the API's other forms join the tags field."""
    raw_conditions = [*p.values(params, "conditions"), *p.values(params, "tagQuery")]
    if query is not None and any(p.values(params, name) for name in ("tags", "tag")):
        conditions = " ".join(condition_text(c) for c in query.tags)
    else:
        conditions = " ".join(raw_conditions)
    from_, to = shown_times(params)
    lookback = params.get("lookback")
    if lookback is None:
        lookback = "custom" if from_ else DEFAULT_LOOKBACK
    return Form(
        service=params.get("service", ""),
        operation=params.get("operation", ""),
        conditions=conditions,
        min_duration=params.get("minDuration", ""),
        max_duration=params.get("maxDuration", ""),
        lookback=lookback or "custom",
        from_=from_,
        to=to,
        limit=p.text(params, "limit") or DEFAULT_LIMIT,
        errors=params.get("errors", "").strip().lower() in ("true", "1", "yes"),
        sort_by=params.get("sortBy", "start"),
        hidden=[(k, v) for k, v in params.multi_items() if k in HIDDEN_PARAMS],
    )


def lookback_options(chosen: str) -> list[tuple[str, str]]:
    """The lookback choices, with a value from a URL that is not among them kept as its own choice."""
    if chosen in dict(LOOKBACK_OPTIONS):
        return list(LOOKBACK_OPTIONS)
    return [*LOOKBACK_OPTIONS, (chosen, f"Last {chosen}")]


def with_chosen(names: Sequence[str], chosen: str) -> list[str]:
    """Dropdown values, with the chosen one kept even when the store does not list it (yet)."""
    return list(names) if not chosen or chosen in names else [chosen, *names]


# ---- results -----------------------------------------------------------------------------------


@dataclass
class TraceRow:
    """One found trace as the table and the scatter show it."""

    trace_id: str
    service: str
    operation: str
    start_us: int
    duration_us: int
    spans: int
    errors: int
    services: list[str]
    ago: str
    when: str

    @property
    def href(self) -> str:
        """The trace page."""
        return f"/trace/{self.trace_id}"

    @property
    def iso(self) -> str:
        """The start as an RFC 3339 time, for `<time datetime>`."""
        return p.rfc3339(self.start_us)


def summarize(spans: Sequence[Span], now: int) -> TraceRow:
    """The row of one trace: its root (the earliest span without a parent in the trace) and totals."""
    ids = {span.span_id for span in spans}
    ordered = sorted(spans, key=lambda s: (s.start_us, -s.duration_us))
    root = next((s for s in ordered if not s.parent_id), None) or next(
        (s for s in ordered if s.parent_id not in ids), ordered[0]
    )
    start = ordered[0].start_us
    end = max(span.end_us for span in spans)
    return TraceRow(
        trace_id=jaeger_id(root.trace_id),
        service=root.service,
        operation=root.operation,
        start_us=start,
        duration_us=end - start,
        spans=len(spans),
        errors=sum(span.is_error for span in spans),
        services=list(dict.fromkeys(span.service for span in ordered)),
        ago=ago(now - start),
        when=utc_text(start),
    )


# ---- the scatter plot --------------------------------------------------------------------------


@dataclass
class Dot:
    """One trace in the scatter plot."""

    x: float
    y: float
    href: str
    error: bool
    title: str


@dataclass
class Scatter:
    """Duration over start time, in SVG user units: the plot area, its dots and labelled ticks."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    dots: list[Dot]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]


TIME_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def nice_step(span: float, count: int = 4) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`."""
    raw = max(span, 1e-9) / count
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def time_ticks(low_us: int, high_us: int, count: int = 5) -> list[tuple[int, str]]:
    """Round times within [low, high] (µs) about `count` apart, labelled in UTC."""
    step_s = next((s for s in TIME_STEPS_S if s * 1_000_000 * count >= high_us - low_us), None)
    if step_s is None:
        step_s = 86400 * math.ceil((high_us - low_us) / 1_000_000 / 86400 / count)
    step = step_s * 1_000_000
    pattern = "%H:%M:%S" if step_s < 60 else "%H:%M"
    if high_us - low_us > 86_400_000_000:
        pattern = "%m-%d %H:%M"
    first = -(-low_us // step) * step
    return [
        (t, datetime.fromtimestamp(t // 1_000_000, UTC).strftime(pattern))
        for t in range(first, high_us + 1, step)
    ]


def scatter(rows: Sequence[TraceRow]) -> Scatter:
    """The scatter plot of the found traces: x the start time, y the duration, errors marked."""
    plot = Scatter(width=960, height=220, left=64, right=944, top=12, bottom=190, dots=[], x_ticks=[],
                   y_ticks=[])  # fmt: skip
    low = min(row.start_us for row in rows)
    high = max(row.start_us for row in rows)
    if high - low < 1_000_000:  # a second either side at least, so one trace sits in the middle
        low, high = low - 1_000_000, high + 1_000_000
    pad = (high - low) // 40
    low, high = low - pad, high + pad
    longest = max(1, *(row.duration_us for row in rows))
    step = nice_step(longest)
    top_us = step * math.ceil(longest / step)

    def x(at: int) -> float:
        """A start time's position across the plot."""
        return round(plot.left + (at - low) / (high - low) * (plot.right - plot.left), 1)

    def y(us: float) -> float:
        """A duration's height in the plot (0 at the bottom)."""
        return round(plot.bottom - us / top_us * (plot.bottom - plot.top), 1)

    for row in rows:
        errors = f", {row.errors} error{'s' if row.errors != 1 else ''}" if row.errors else ""
        title = f"{row.service}: {row.operation} — {duration(row.duration_us)}{errors}, {row.when}"
        plot.dots.append(Dot(x(row.start_us), y(row.duration_us), row.href, row.errors > 0, title))
    plot.x_ticks = [(x(at), label) for at, label in time_ticks(low, high)]
    plot.y_ticks = [(y(i * step), duration(i * step) if i else "0") for i in range(round(top_us / step) + 1)]
    return plot


# ---- the page ----------------------------------------------------------------------------------


def error_message(exc: p.ParamError) -> tuple[str, str]:
    """The form field a bad parameter belongs to and what to tell the person about it."""
    name = FIELDS.get(exc.name, "")
    return name, f"{LABELS[name]}: {exc.reason}" if name else str(exc)


def routes(store: Store) -> list[BaseRoute]:
    """The search page's routes."""

    def operation_names(service: str) -> list[str]:
        """The distinct operation names of a service (of every service for "")."""
        return list(dict.fromkeys(name for name, _ in store.operations(service or None)))

    def load(service: str, query: TraceQuery | None) -> tuple[list[str], list[str], list[list[Span]]]:
        """Everything the page reads from the store, in one trip to a worker thread."""
        found = store.search(query) if query is not None else []
        return store.services(), operation_names(service), found

    async def search_page(request: Request) -> Response:
        """`GET /search`: the form, and the traces its parameters find (400 with the form for bad ones)."""
        params = request.query_params
        now = now_us()
        query: TraceQuery | None = None
        field_name, message = "", ""
        try:
            query = p.jaeger_trace_query(api_params(params), now)
        except p.ParamError as exc:
            field_name, message = error_message(exc)
        form = form_values(params, query)
        services, operations, traces = await run_in_threadpool(load, form.service, query)
        rows = [summarize(spans, now) for spans in traces if spans]
        context = {
            "form": form,
            "services": with_chosen(services, form.service),
            "operations": with_chosen(operations, form.operation),
            "lookbacks": lookback_options(form.lookback),
            "sorts": SORTS,
            "error_field": field_name,
            "error": message,
            "searched": query is not None,
            "rows": rows,
            "limit": query.limit if query is not None else 0,
            "plot": scatter(rows) if rows else None,
        }
        return render(request, "search.html", "search", context, status=400 if message else 200)

    return [Route("/search", search_page)]
