"""The Logs page, `/logs`: log records found by service, severity, text, attributes, trace and time.

The page is a GET form, so every search is a URL. The server turns the form into the parameters of
`GET /api/logs` (and of its live tail, `GET /api/logs/tail`) and puts them in the page; `static/logs.js`
asks the API, draws the records newest first, expands one to its attributes and resource, and with the
live tail on adds each new record at the top. The form's own fields: `tags` as `key=value` terms
(quoted when they hold spaces; a JSON object is taken as the API takes it), `lookback` (or `from`/`to`
in UTC, or `start`/`end` in µs as the API takes them). Without a time, a search by trace or span id
looks at any time, every other search at the last hour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.ui.local_api import LocalApi
from boutique.observatory.ui.pages import render
from boutique.observatory.ui.search import FilterForm, parse_utc, shown_times, split_conditions, with_chosen
from boutique.observatory.ui.timefmt import DEFAULT_LOOKBACK, LOOKBACK_LABELS, LOOKBACKS, now_us

DEFAULT_LIMIT = "100"
ANY_TIME = "all"
CUSTOM = "custom"
LOOKBACK_OPTIONS = [*LOOKBACK_LABELS.items(), (ANY_TIME, "Any time"), (CUSTOM, "Custom (from / to)")]
SEVERITIES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
FILTERS = ("service", "minSeverity", "q", "traceID", "spanID")  # passed to the API as they are
MAX_ROWS = 1000  # records the page keeps (the API's largest limit); with the live tail the oldest leave


class FormError(ValueError):
    """A form field the page cannot turn into an API parameter: which field, and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def tags_json(text: str) -> str:
    """The tags field as the API's JSON object: `key=value` terms, or a JSON object given as such."""
    raw = text.strip()
    if raw.startswith("{"):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise FormError("tags", f"not a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise FormError("tags", "not a JSON object")
        return raw
    try:
        terms = split_conditions(raw)
    except p.ParamError as exc:
        raise FormError("tags", exc.reason) from None
    pairs: dict[str, str] = {}
    for term in terms:
        key, equals, value = term.partition("=")
        if not equals or not key:
            raise FormError("tags", f"{term!r} is not key=value")
        pairs[key] = value
    return json.dumps(pairs, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Form(FilterForm):
    """The values the form shows: those submitted, or the defaults."""

    min_severity: str = ""
    q: str = ""
    tags: str = ""
    trace_id: str = ""
    span_id: str = ""
    limit: str = DEFAULT_LIMIT
    tail: bool = False


def form_values(params: QueryParams) -> Form:
    """The form as submitted, with `start`/`end` in µs shown in the From and To fields."""
    from_, to = shown_times(params)
    by_id = bool(p.text(params, "traceID") or p.text(params, "spanID"))
    lookback = params.get("lookback") or (CUSTOM if from_ or to else ANY_TIME if by_id else DEFAULT_LOOKBACK)
    return Form(
        service=params.get("service", ""),
        min_severity=params.get("minSeverity", "").upper(),
        q=params.get("q", ""),
        tags=params.get("tags", ""),
        trace_id=params.get("traceID", ""),
        span_id=params.get("spanID", ""),
        lookback=lookback,
        from_=from_,
        to=to,
        limit=p.text(params, "limit") or DEFAULT_LIMIT,
        tail=params.get("tail", "") in ("1", "true", "on"),
    )


def filter_params(form: Form) -> list[tuple[str, str]]:
    """The API's filters (no time, no limit): what the search and the live tail share."""
    values = {
        "service": form.service,
        "minSeverity": form.min_severity,
        "q": form.q,
        "traceID": form.trace_id.strip().lower(),
        "spanID": form.span_id.strip().lower(),
    }
    items = [(name, values[name]) for name in FILTERS if values[name]]
    if form.tags.strip():
        items.append(("tags", tags_json(form.tags)))
    return items


def time_params(form: Form, params: QueryParams, now: int) -> list[tuple[str, str]]:
    """The API's `start` and `end`: from the From/To fields, `start`/`end` as given, or the lookback."""
    items: list[tuple[str, str]] = []
    for field, api_name in (("from", "start"), ("to", "end")):
        value = p.text(params, field)
        given = p.text(params, api_name)
        if value is not None:
            try:
                items.append((api_name, str(parse_utc(field, value))))
            except p.ParamError as exc:
                raise FormError(field, exc.reason) from None
        elif given is not None:
            items.append((api_name, given))
    if items or form.lookback in (ANY_TIME, CUSTOM):
        return items
    if form.lookback not in LOOKBACKS:
        raise FormError("lookback", f"one of {', '.join(LOOKBACKS)}, {ANY_TIME} or {CUSTOM}")
    return [("start", str(now - LOOKBACKS[form.lookback]))]


def routes(api: LocalApi) -> list[BaseRoute]:
    """The Logs page's routes, reading through the logs API."""

    async def page(request: Request) -> Response:
        """`GET /logs`: the form and the API queries its parameters make (400 with the form for bad ones)."""
        params = request.query_params
        form = form_values(params)
        error_field, message, query, tail = "", "", "", ""
        try:
            filters = filter_params(form)
            searched = [*filters, *time_params(form, params, now_us()), ("limit", form.limit)]
            query, tail = urlencode(searched), urlencode(filters)
        except FormError as exc:
            error_field, message = exc.field, f"{exc.field.capitalize()}: {exc.reason}"
        services = await api.get("/api/logs/services")
        context = {
            "form": form,
            "services": with_chosen(services.data or [], form.service),
            "severities": SEVERITIES,
            "lookbacks": LOOKBACK_OPTIONS,
            "error_field": error_field,
            "error": message,
            "query": query,
            "tail_query": tail,
            "max_rows": MAX_ROWS,
        }
        return render(request, "logs.html", "logs", context, status=400 if message else 200)

    return [Route("/logs", page)]
