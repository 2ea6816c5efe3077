"""The Metrics page, `/charts`: any instrument of a service as a chart, filtered and grouped by its labels.

A GET form, so every chart is a URL: `service`, `name` (the instrument), `fn` (`metric_chart.functions`
offers those that suit its kind), `filter.<label>=value` (repeatable, one per label), `groupBy`
(repeatable), and `lookback` or `start`/`end` in µs. Everything comes from the metrics API
(`/api/metrics/series`, `/query`, `/exemplars`, called in process) and is drawn on the server as the
Services page draws its charts; `static/charts.js` lets a window be dragged out on the chart to find
the traces in it (the search page, with this service and the window's `start` and `end`).
(`/metrics` is left for a Prometheus endpoint.)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.api import params as p
from boutique.observatory.ui import charts
from boutique.observatory.ui.local_api import Answer, LocalApi
from boutique.observatory.ui.metric_chart import (
    MEASURED,
    api_queries,
    biggest,
    exemplar_marks,
    functions,
    lines_of,
    metric_chart,
    value_format,
)
from boutique.observatory.ui.pages import render
from boutique.observatory.ui.services import PAGE_LOOKBACKS, step_text
from boutique.observatory.ui.timefmt import DEFAULT_LOOKBACK, LOOKBACKS, now_us, utc_text

FILTER_PREFIX = "filter."
INSTANCE = "instance"  # group-by name the API knows besides the labels: one line per process
MAX_LINES = 20
POINTS = 120  # the API's own default: (end - start) / 120
MIN_STEP_US = 15_000_000  # below the shop's export interval most steps would hold no point


class BadParameter(ValueError):
    """A page parameter that cannot be used; shown to the person with a 400."""


@dataclass(frozen=True)
class Instrument:
    """One instrument of a service as the series API describes it."""

    name: str
    kind: str
    unit: str
    description: str
    temporality: str
    monotonic: bool
    labels: dict[str, list[str]]

    @property
    def kind_text(self) -> str:
        """The kind as a person reads it: `monotonic cumulative sum`, `gauge`, `histogram`…"""
        words = [self.kind.replace("_", " ")]
        if self.temporality:
            words.insert(0, self.temporality)
        if self.kind == "sum" and self.monotonic:
            words.insert(0, "monotonic")
        return " ".join(words)


def instruments(series: list[dict[str, Any]], service: str) -> dict[str, Instrument]:
    """The service's instruments by name (series repeated for a name join their labels)."""
    found: dict[str, Instrument] = {}
    for one in series:
        if one.get("service") != service:
            continue
        name = str(one.get("name", ""))
        labels = {str(k): [str(v) for v in values] for k, values in (one.get("labels") or {}).items()}
        known = found.get(name)
        if known is not None:
            for key, values in labels.items():
                known.labels[key] = sorted({*known.labels.get(key, []), *values})
            continue
        found[name] = Instrument(
            name=name,
            kind=str(one.get("kind", "")),
            unit=str(one.get("unit", "")),
            description=str(one.get("description", "")),
            temporality=str(one.get("temporality", "")),
            monotonic=bool(one.get("monotonic", False)),
            labels={key: sorted(values) for key, values in labels.items()},
        )
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Window:
    """The charted time range, and whether it was zoomed to (`start`/`end`) rather than a lookback."""

    start_us: int
    end_us: int
    lookback: str
    zoomed: bool

    @property
    def step_us(self) -> int:
        """The query's step."""
        return max(MIN_STEP_US, (self.end_us - self.start_us) // POINTS)


def window_of(params: QueryParams, now: int) -> Window:
    """`start`/`end` (µs) when given, else the lookback ending now."""
    lookback = params.get("lookback") or DEFAULT_LOOKBACK
    if lookback not in PAGE_LOOKBACKS:
        raise BadParameter(f"Time range: one of {', '.join(PAGE_LOOKBACKS)}, not {lookback!r}")
    start, end = p.text(params, "start"), p.text(params, "end")
    if start is None and end is None:
        return Window(now - LOOKBACKS[lookback], now, lookback, False)
    try:
        end_us = p.parse_int("end", end, minimum=0) if end else now
        start_us = p.parse_int("start", start, minimum=0) if start else end_us - LOOKBACKS[lookback]
    except p.ParamError as exc:
        raise BadParameter(f"Time range: {exc.reason}") from None
    if start_us >= end_us:
        raise BadParameter("Time range: start must be before end")
    return Window(start_us, end_us, lookback, True)


@dataclass
class Choice:
    """What the form shows: the service, instrument, function, filters and group-by chosen."""

    service: str = ""
    name: str = ""
    fn: str = ""
    filters: dict[str, str] = field(default_factory=dict)
    group_by: list[str] = field(default_factory=list)


def choice_of(params: QueryParams, known: dict[str, Instrument]) -> tuple[Choice, Instrument | None]:
    """The choices, keeping only what the chosen instrument has (a stale name or label is dropped)."""
    choice = Choice(service=params.get("service", ""))
    instrument = known.get(params.get("name", ""))
    if instrument is None:
        return choice, None
    choice.name = instrument.name
    offered = [value for value, _ in functions(instrument.kind, instrument.monotonic)]
    wanted = params.get("fn", "")
    choice.fn = wanted if wanted in offered else offered[0]
    for key, value in params.multi_items():
        label = key.removeprefix(FILTER_PREFIX)
        if key.startswith(FILTER_PREFIX) and value and label in instrument.labels:
            choice.filters[label] = value
    grouped = [g.strip() for value in params.getlist("groupBy") for g in value.split(",")]
    choice.group_by = [g for g in dict.fromkeys(grouped) if g in instrument.labels or g == INSTANCE]
    return choice, instrument


@dataclass(frozen=True)
class Drawn:
    """The chart of a choice, or why there is none."""

    chart: charts.LineChart | None
    error: str
    lines: int  # lines the answer had (more than drawn when over MAX_LINES)


async def draw(api: LocalApi, choice: Choice, instrument: Instrument, window: Window) -> Drawn:
    """Ask the API for the chosen function's series (and the exemplars) and draw them."""
    common = [
        ("name", choice.name),
        ("service", choice.service),
        ("start", str(window.start_us)),
        ("end", str(window.end_us)),
    ]
    if choice.filters:
        common.append(("filters", json.dumps(choice.filters, separators=(",", ":"))))
    query = [*common, ("step", str(window.step_us))]
    if choice.group_by:
        query.append(("groupBy", ",".join(choice.group_by)))
    plans = api_queries(choice.fn)
    answers = await asyncio.gather(
        *(api.get("/api/metrics/query", [*query, *fn_params]) for _, fn_params in plans),
        api.get("/api/metrics/exemplars", common),
    )
    failed = next((answer for answer in answers[:-1] if not answer.ok), None)
    if failed is not None:
        return Drawn(None, failed.message, 0)
    first = answers[0].data or {}
    unit = str(first.get("unit") or instrument.unit)
    fmt = value_format(unit, choice.fn)
    found = [
        (prefix, (answer.data or {}).get("series") or [])
        for (prefix, _), answer in zip(plans, answers[: len(plans)], strict=True)
    ]
    lines = lines_of(found, instrument.name)
    measured = choice.fn in MEASURED and instrument.kind != "sum"  # a sum's exemplars are increments
    marks = exemplar_marks(_exemplars(answers[-1]), choice.filters, measured, fmt)
    title = f"{instrument.name}{f' ({unit})' if unit else ''}"
    chart = metric_chart(title, (window.start_us, window.end_us), biggest(lines, MAX_LINES), fmt, marks)
    return Drawn(chart, "", len(lines))


def _exemplars(answer: Answer) -> list[dict[str, Any]]:
    """The exemplars of an answer (none when the API has none or refused)."""
    data = answer.data
    return [e for e in data if isinstance(e, dict) and "time" in e] if isinstance(data, list) else []


def page_url(choice: Choice, window: Window, **changes: Any) -> str:
    """This page with the choice and window (zoomed windows keep start and end), changed as given."""
    items: list[tuple[str, str]] = [("service", choice.service), ("name", choice.name), ("fn", choice.fn)]
    items += [(FILTER_PREFIX + k, v) for k, v in choice.filters.items()]
    items += [("groupBy", g) for g in choice.group_by]
    items.append(("lookback", window.lookback))
    if window.zoomed:
        items += [("start", str(window.start_us)), ("end", str(window.end_us))]
    for key, value in changes.items():
        items = [(k, v) for k, v in items if k != key]
        if value is not None:
            items.append((key, str(value)))
    return "/charts?" + urlencode([(k, v) for k, v in items if v])


def traces_url(service: str, start_us: int, end_us: int) -> str:
    """The search page for the service's traces in a window."""
    return "/search?" + urlencode({"service": service, "start": start_us, "end": end_us})


def routes(api: LocalApi) -> list[BaseRoute]:
    """The Metrics page's routes, reading through the metrics API."""

    async def page(request: Request) -> Response:
        """`GET /charts`: the pickers, and the chart of the chosen instrument (400 for a bad parameter)."""
        params = request.query_params
        context: dict[str, Any] = {
            "lookbacks": PAGE_LOOKBACKS,
            "lookback": params.get("lookback") or DEFAULT_LOOKBACK,
            "services": [],
            "instruments": {},
            "choice": Choice(service=params.get("service", "")),
            "instrument": None,
            "functions": (),
            "drawn": None,
            "error": "",
            "api_error": "",
        }
        try:
            window = window_of(params, now_us())
        except BadParameter as exc:
            context["error"] = str(exc)
            return render(request, "charts.html", "metrics", context, status=400)
        listed = await api.get("/api/metrics/series")
        if not listed.ok:
            context["api_error"] = listed.message
            return render(request, "charts.html", "metrics", context, status=listed.status)
        series = [s for s in listed.data or [] if isinstance(s, dict)]
        services = sorted({str(s.get("service", "")) for s in series} - {""})
        known = instruments(series, context["choice"].service)
        choice, instrument = choice_of(params, known)
        context.update(
            lookback=window.lookback,
            services=services,
            instruments=known,
            choice=choice,
            instrument=instrument,
            window=window,
            window_text=f"{utc_text(window.start_us)} to {utc_text(window.end_us)}",
            step_text=step_text(window.step_us),
            whole_url=page_url(choice, window, start=None, end=None),
            traces_url=traces_url(choice.service, window.start_us, window.end_us) if choice.service else "",
        )
        status = 200
        if choice.service and choice.service not in services:
            context["error"] = f"No metrics of a service named {choice.service!r} are stored."
            status = 404
        elif instrument is not None:
            context["functions"] = functions(instrument.kind, instrument.monotonic)
            drawn = await draw(api, choice, instrument, window)
            context["drawn"] = drawn
            if drawn.error:
                context["api_error"] = drawn.error
                status = 400
        return render(request, "charts.html", "metrics", context, status=status)

    return [Route("/charts", page)]
