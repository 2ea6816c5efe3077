"""The Profiles page, `/profiles`: a service's stack samples as a flame graph, its top functions, a frame
search, a comparison with another window, and the traces a frame's time was spent in.

The page is a GET form, so every view is a URL: `service`, `instance`, `type` (cpu, wall, tasks, or as a
client named it), `granularity` (function or line), `lookback` (or `from`/`to` in UTC, or `start`/`end` in µs),
`compare` (`previous`: the window of the same length just before; `custom`: `baseFrom`/`baseTo`, or
`baseStart`/`baseEnd` in µs) and `q` (the frames to highlight). With `traceID` and `spanID` it shows one
span's samples (with `traceID` alone, a trace's), at its own time unless a time is given. The server checks the fields and turns
them into the parameters of `GET /api/profiles…` (called by the browser; the services and the span are
read in process); `static/profiles.js` draws the flame graph on a canvas, root at the top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.ui.local_api import LocalApi
from boutique.observatory.ui.logs import FormError
from boutique.observatory.ui.pages import duration, render
from boutique.observatory.ui.search import FilterForm, parse_utc, shown_times, utc_field, with_chosen
from boutique.observatory.ui.timefmt import DEFAULT_LOOKBACK, LOOKBACK_LABELS, LOOKBACKS, now_us, utc_text

DEFAULT_TYPE = "cpu"
KNOWN_TYPES = ("cpu", "wall", "tasks")  # always offered; a service's other types join them
TYPE_HELP = {  # each type's label in the selector, and what it shows (its tooltip)
    "cpu": ("cpu (on-CPU time)", "Where threads ran on the CPU"),
    "wall": ("wall (wall-clock time)", "Where every thread was at each tick, running or waiting"),
    "tasks": ("tasks (asyncio tasks)", "Where every asyncio task was waiting or running"),
}
GRANULARITIES = (("function", "Functions"), ("line", "Lines"))
CUSTOM = "custom"
SPAN = "span"  # the lookback of a span's (or trace's) profile: its own start and end
LOOKBACK_OPTIONS = [*LOOKBACK_LABELS.items(), (CUSTOM, "Custom (from / to)")]
COMPARES = (("", "Nothing"), ("previous", "The window before"), (CUSTOM, "Another window (base from / to)"))
_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SPAN_HEX = re.compile(r"[0-9a-fA-F]{1,16}")
_TRACE_HEX = re.compile(r"[0-9a-fA-F]{1,32}")


@dataclass
class Form(FilterForm):
    """The values the form shows: those submitted, or the defaults."""

    instance: str = ""
    type: str = DEFAULT_TYPE
    granularity: str = "function"
    compare: str = ""
    base_from: str = ""
    base_to: str = ""
    q: str = ""
    trace_id: str = ""
    span_id: str = ""
    thread: str = ""

    @property
    def by_span(self) -> bool:
        """Whether the page shows one span's samples."""
        return bool(self.trace_id and self.span_id)

    @property
    def by_trace(self) -> bool:
        """Whether the page shows one trace's (or span's) samples, rather than a window's."""
        return bool(self.trace_id)


@dataclass(frozen=True)
class Window:
    """The time range asked for (None: the API's default, a span's own time) and the base to compare with."""

    start_us: int | None
    end_us: int | None
    base: tuple[int, int] | None = None


@dataclass(frozen=True)
class SpanFacts:
    """What the trace says of the span whose profile is shown."""

    service: str
    operation: str
    start_us: int
    duration_us: int


def form_values(params: QueryParams) -> Form:
    """The form as submitted, with `start`/`end` (and the base's) in µs shown in the date-time fields."""
    from_, to = shown_times(params)
    base_from = p.text(params, "baseFrom") or _field_of(p.text(params, "baseStart"))
    base_to = p.text(params, "baseTo") or _field_of(p.text(params, "baseEnd"))
    trace_id, span_id = params.get("traceID", "").strip().lower(), params.get("spanID", "").strip().lower()
    lookback = params.get("lookback") or (CUSTOM if from_ or to else SPAN if trace_id else DEFAULT_LOOKBACK)
    compare = params.get("compare") or (CUSTOM if base_from or base_to else "")
    return Form(
        service=params.get("service", ""),
        instance=params.get("instance", ""),
        type=params.get("type", "").strip() or DEFAULT_TYPE,
        granularity=params.get("granularity", "").strip() or "function",
        lookback=lookback,
        from_=from_,
        to=to,
        compare=compare,
        base_from=base_from,
        base_to=base_to,
        q=params.get("q", ""),
        trace_id=trace_id,
        span_id=span_id,
        thread=params.get("thread", ""),
    )


def _field_of(micros: str | None) -> str:
    """µs from a URL as a date-time field's value ("" when absent or not a number)."""
    return utc_field(int(micros)) if micros and micros.isdigit() else ""


def _time(params: QueryParams, field: str, api_name: str) -> int | None:
    """A time from its date-time field, else its µs parameter, else None."""
    value, given = p.text(params, field), p.text(params, api_name)
    try:
        if value is not None:
            return parse_utc(field, value)
        if given is not None:
            return p.parse_int(api_name, given, minimum=0)
    except p.ParamError as exc:
        raise FormError(field, exc.reason) from None
    return None


def window_of(form: Form, params: QueryParams, now: int) -> Window:
    """The time range and the base window the form asks for (`FormError` for a bad one)."""
    start, end = _time(params, "from", "start"), _time(params, "to", "end")
    if start is not None or end is not None:
        end = now if end is None else end
        start = end - LOOKBACKS[DEFAULT_LOOKBACK] if start is None else start
    elif form.lookback == SPAN and form.by_trace:
        return Window(None, None)
    elif form.lookback in LOOKBACKS:
        start, end = now - LOOKBACKS[form.lookback], now
    elif form.lookback == CUSTOM:
        raise FormError("from", "give a From or a To time, or choose a time range")
    else:
        raise FormError("lookback", f"one of {', '.join(LOOKBACKS)} or {CUSTOM}, not {form.lookback!r}")
    if start >= end:
        raise FormError("to", "must be after From")
    return Window(start, end, base_of(form, params, start, end))


def base_of(form: Form, params: QueryParams, start: int, end: int) -> tuple[int, int] | None:
    """The window to compare with: none (always for a trace's or span's samples), the one just before, or
    the base fields'."""
    if form.compare == "" or form.by_trace:
        return None
    length = end - start
    if form.compare == "previous":
        return start - length, start
    if form.compare != CUSTOM:
        raise FormError("compare", f"one of previous or {CUSTOM}, not {form.compare!r}")
    base_start, base_end = _time(params, "baseFrom", "baseStart"), _time(params, "baseTo", "baseEnd")
    if base_start is None:
        if base_end is None:
            raise FormError("baseFrom", "give the base window's From (and To) to compare with")
        base_start = base_end - length
    if base_end is None:
        base_end = base_start + length
    if base_start >= base_end:
        raise FormError("baseTo", "must be after Base from")
    return base_start, base_end


def api_params(form: Form, window: Window) -> list[tuple[str, str]]:
    """The parameters of `GET /api/profiles` (and /top, /traces, /pprof) the form makes."""
    if not _TYPE.fullmatch(form.type):
        raise FormError("type", f"a profile type is a short name such as cpu or wall, not {form.type!r}")
    if form.granularity not in dict(GRANULARITIES):
        raise FormError("granularity", f"function or line, not {form.granularity!r}")
    if form.trace_id and not _TRACE_HEX.fullmatch(form.trace_id):
        raise FormError("traceID", f"a trace id is 1 to 32 hexadecimal digits, not {form.trace_id!r}")
    if form.span_id and not _SPAN_HEX.fullmatch(form.span_id):
        raise FormError("spanID", f"a span id is 1 to 16 hexadecimal digits, not {form.span_id!r}")
    if form.span_id and not form.trace_id:
        raise FormError("traceID", "a span's profile needs its trace id too")
    items = [("service", form.service), ("instance", form.instance), ("type", form.type)]
    if form.granularity != "function":
        items.append(("granularity", form.granularity))
    items += [("thread", form.thread), ("traceID", form.trace_id), ("spanID", form.span_id)]
    if window.start_us is not None and window.end_us is not None:
        items += [("start", str(window.start_us)), ("end", str(window.end_us))]
    return [(name, value) for name, value in items if value]


def span_facts(trace: Any, span_id: str) -> SpanFacts | None:
    """The span's service, operation and time from a Jaeger trace answer (None when it is not there)."""
    if not isinstance(trace, list) or not trace or not isinstance(trace[0], dict):
        return None
    wanted = span_id.rjust(16, "0")
    processes = trace[0].get("processes") or {}
    for span in trace[0].get("spans") or []:
        if str(span.get("spanID", "")).rjust(16, "0") == wanted:
            process = processes.get(span.get("processID"), {})
            return SpanFacts(
                service=str(process.get("serviceName", "")),
                operation=str(span.get("operationName", "")),
                start_us=int(span.get("startTime", 0)),
                duration_us=int(span.get("duration", 0)),
            )
    return None


def catalogue(data: Any) -> dict[str, dict[str, list[str]]]:
    """The services with profiles, each with its types and instances, from `/api/profiles/services`."""
    found: dict[str, dict[str, list[str]]] = {}
    for one in data if isinstance(data, list) else []:
        if isinstance(one, dict) and one.get("service"):
            found[str(one["service"])] = {
                "types": [str(t) for t in one.get("types") or []],
                "instances": [str(i) for i in one.get("instances") or []],
            }
    return dict(sorted(found.items()))


def type_options(known: dict[str, list[str]] | None, chosen: str) -> list[str]:
    """The types offered: cpu, wall, tasks, the service's others, and the chosen one."""
    return list(dict.fromkeys([*KNOWN_TYPES, *((known or {}).get("types") or []), chosen]))


def window_text(window: Window) -> tuple[str, str]:
    """The shown window and base window as a person reads them ("" when the API chooses)."""
    shown = ""
    if window.start_us is not None and window.end_us is not None:
        shown = f"{utc_text(window.start_us)} to {utc_text(window.end_us)}"
    base = f"{utc_text(window.base[0])} to {utc_text(window.base[1])}" if window.base else ""
    return shown, base


def routes(api: LocalApi) -> list[BaseRoute]:
    """The Profiles page's routes, reading through the profiles API."""

    async def page(request: Request) -> Response:
        """`GET /profiles`: the form and the API queries it makes (400 with the form for a bad field)."""
        params = request.query_params
        form = form_values(params)
        error_field, message, query, base_query = "", "", "", ""
        window = Window(None, None)
        try:
            window = window_of(form, params, now_us())
            query = urlencode(api_params(form, window))
            if window.base:
                base_query = urlencode({"baseStart": window.base[0], "baseEnd": window.base[1]})
        except FormError as exc:
            error_field, message = exc.field, f"{exc.field[:1].upper()}{exc.field[1:]}: {exc.reason}"
        listed = await api.get("/api/profiles/services")
        services = catalogue(listed.data)
        span = None
        if form.by_span and not message:
            found = await api.get(f"/api/traces/{form.trace_id}")
            span = span_facts(found.data, form.span_id)
        shown, base = window_text(window)
        own = (SPAN, f"While the {'span' if form.by_span else 'trace'} ran")
        lookbacks = [*LOOKBACK_OPTIONS, own] if form.by_trace else LOOKBACK_OPTIONS
        context = {
            "form": form,
            "services": with_chosen(list(services), form.service),
            "instances": with_chosen((services.get(form.service) or {}).get("instances", []), form.instance),
            "types": type_options(services.get(form.service), form.type),
            "type_help": TYPE_HELP,
            "granularities": GRANULARITIES,
            "lookbacks": lookbacks,
            "compares": COMPARES,
            "error_field": error_field,
            "error": message,
            "api_error": "" if listed.ok else listed.message,
            "stored": bool(services),
            "query": query,
            "base_query": base_query,
            "show_profile": bool(query) and bool(form.service or form.by_trace),
            "window_text": shown,
            "base_text": base,
            "span": span,
            "span_duration": duration(span.duration_us) if span else "",
            "span_start": utc_text(span.start_us) if span else "",
            "trace_url": f"/trace/{form.trace_id}"
            + (f"?{urlencode({'span': form.span_id})}" if form.span_id else ""),
            "service_url": "/profiles?"
            + urlencode({"service": form.service or (span and span.service) or ""}),
        }
        status = 400 if message else 200
        return render(request, "profiles.html", "profiles", context, status=status)

    return [Route("/profiles", page)]
