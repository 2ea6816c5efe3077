"""What the Metrics page draws for one instrument: which functions suit its kind, and the chart of a query.

The instrument's kind decides the sensible functions of `GET /api/metrics/query` (a rate for a monotonic
sum, the value of a gauge, quantiles or a count rate for a histogram); the page's choice maps onto the
API's `fn` and `quantile`, and each answer's series become lines of a `charts.LineChart`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from boutique.observatory.ui import charts
from boutique.observatory.ui.pages import PALETTE, duration

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
ALL_QUANTILES = "quantiles"  # the page's own choice: p50, p95 and p99 together
HISTOGRAMS = ("histogram", "exponential_histogram", "summary")

# The functions offered per kind, the default first: (page value, label).
MONOTONIC_SUM = (("rate", "Rate per second"), ("increase", "Increase per step"), ("value", "Total"))
SUM = (("value", "Value"), ("increase", "Change per step"), ("rate", "Change per second"))
GAUGE = (("value", "Last value"), ("avg", "Average"), ("min", "Minimum"), ("max", "Maximum"))
HISTOGRAM = (
    (ALL_QUANTILES, "p50, p95, p99"),
    ("p50", "p50 (median)"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("count_rate", "Count per second"),
    ("avg", "Average"),
    ("count", "Count (total)"),
    ("sum", "Sum (total)"),
)
# Functions whose values are measurements, on the same scale as an exemplar's value.
MEASURED = frozenset({"value", "avg", "min", "max", ALL_QUANTILES, *QUANTILES})
TIME_UNITS = {
    "s": 1_000_000,
    "ms": 1000,
    "us": 1,
    "µs": 1,
    "ns": 0.001,
    "min": 60_000_000,
    "h": 3_600_000_000,
}
QUANTILE_COLOURS = {"p50": "#2e9e6b", "p95": "#d9822b", "p99": "#c62828"}


def functions(kind: str, monotonic: bool) -> tuple[tuple[str, str], ...]:
    """The functions the page offers for an instrument, the sensible default first."""
    if kind == "sum":
        return MONOTONIC_SUM if monotonic else SUM
    if kind == "gauge":
        return GAUGE
    if kind in HISTOGRAMS:
        return HISTOGRAM
    return (("value", "Value"),)


def api_queries(fn: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The API queries a page function needs: (line name prefix, `fn` and `quantile` parameters) each."""
    if fn == ALL_QUANTILES:
        return [(name, [("fn", "quantile"), ("quantile", str(q))]) for name, q in QUANTILES.items()]
    if fn in QUANTILES:
        return [("", [("fn", "quantile"), ("quantile", str(QUANTILES[fn]))])]
    return [("", [("fn", fn)])]


def bare_unit(unit: str) -> str:
    """A UCUM unit without annotations (`{request}` is a count; `By{bytes}` is `By`)."""
    text = unit
    while "{" in text and "}" in text[text.index("{") :]:
        first = text.index("{")
        text = text[:first] + text[text.index("}", first) + 1 :]
    return "" if text == "1" else text.strip()


def number_text(value: float) -> str:
    """A number to three significant digits, with k/M/G for large ones."""
    size = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def value_format(unit: str, fn: str) -> Callable[[float], str]:
    """How the chart writes a value of the function's results for an instrument of this unit."""
    bare = bare_unit(unit)
    if fn == "count":
        return number_text
    if fn == "count_rate":
        return lambda v: f"{number_text(v)}/s"
    if bare in TIME_UNITS and fn != "rate":
        scale = TIME_UNITS[bare]
        return lambda v: duration(v * scale) if v > 0 else number_text(v)
    suffix = f" {bare}" if bare else ""
    if fn == "rate":
        return lambda v: f"{number_text(v)}{suffix}/s"
    return lambda v: f"{number_text(v)}{suffix}"


def labels_text(labels: Mapping[str, Any]) -> str:
    """A series' labels as the legend shows them: `method=GET, code=200`."""
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))


@dataclass(frozen=True)
class Line:
    """One line to draw: its name, colour and points (µs, value or None)."""

    name: str
    colour: str
    points: Sequence[Sequence[Any]]


def lines_of(answers: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], fallback: str) -> list[Line]:
    """The lines of the query answers: (prefix, series) each; colours by quantile or in palette order."""
    lines: list[Line] = []
    for prefix, series in answers:
        for one in series:
            label = labels_text(one.get("labels") or {})
            name = " · ".join(part for part in (prefix, label) if part) or fallback
            colour = QUANTILE_COLOURS[prefix] if prefix and len(answers) > 1 and not label else ""
            lines.append(Line(name, colour, one.get("points") or []))
    return [
        Line(line.name, line.colour or PALETTE[k % len(PALETTE)], line.points) for k, line in enumerate(lines)
    ]


def biggest(lines: Sequence[Line], keep: int) -> list[Line]:
    """At most `keep` lines: those with the highest values, in their original order."""
    if len(lines) <= keep:
        return list(lines)

    def top(line: Line) -> float:
        """The line's highest value."""
        return max((float(v) for _, v in line.points if v is not None), default=-math.inf)

    chosen = set(sorted(range(len(lines)), key=lambda k: -top(lines[k]))[:keep])
    return [line for k, line in enumerate(lines) if k in chosen]


def exemplar_marks(
    found: Sequence[Mapping[str, Any]],
    filters: Mapping[str, str],
    measured: bool,
    fmt: Callable[[float], str],
) -> list[charts.Exemplar]:
    """Exemplars matching the filters as chart dots linking to their trace (at their value when the chart
    shows measurements, else on the time axis)."""
    marks = []
    for one in found:
        labels = one.get("labels") or {}
        if any(str(labels.get(key, "")) != value for key, value in filters.items() if key in labels):
            continue
        trace, span = str(one.get("traceID") or ""), str(one.get("spanID") or "")
        if not trace:
            continue
        value = one.get("value")
        number = float(value) if isinstance(value, int | float) else None
        href = f"/trace/{trace}" + (f"?span={span}" if span else "")
        text = fmt(number) if number is not None else "?"
        tooltip = f"{charts.clock(int(one['time']), seconds=True)} UTC · {text} · trace {trace[:16]}"
        if labels:
            tooltip += f" · {labels_text(labels)}"
        marks.append(charts.Exemplar(int(one["time"]), number if measured else None, href, tooltip))
    return marks


def metric_chart(
    title: str,
    span: tuple[int, int],
    lines: Sequence[Line],
    fmt: Callable[[float], str],
    exemplars: Sequence[charts.Exemplar] = (),
) -> charts.LineChart:
    """The chart of the lines over the window: every time any line has is a point of the x axis."""
    times = sorted({int(t) for line in lines for t, _ in line.points})
    series = []
    for line in lines:
        at = {int(t): (float(v) if v is not None else None) for t, v in line.points}
        series.append(charts.Series(line.name, line.colour, [at.get(t) for t in times]))
    return charts.line_chart(
        "metric", title, times, series, fmt, width=960, height=320, span=span, exemplars=exemplars
    )
