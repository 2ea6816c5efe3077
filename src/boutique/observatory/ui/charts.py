"""Line charts over time as geometry for an inline SVG drawn on the server: scaled paths, ticks, tooltips.

A chart is computed here and drawn by a template macro, so the page needs no JavaScript to show it.
Times are shown in UTC; a missing value (no data in that step) breaks the line rather than drawing zero.
Events (a feature flag switched) are drawn as labelled vertical markers at their moment, so a change
and its effect on the lines can be seen together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

MINUTE_US = 60_000_000
TIME_STEPS_US = tuple(
    minutes * MINUTE_US for minutes in (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440)
)


@dataclass(frozen=True)
class Series:
    """One line: a name for the legend, a colour, and a value (or None for no data) per time."""

    name: str
    colour: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Tick:
    """An axis mark: where (in SVG units) and what it says."""

    at: float
    label: str


@dataclass(frozen=True)
class ChartPoint:
    """One data point in SVG units, with the text of its tooltip."""

    x: float
    y: float
    tooltip: str


@dataclass(frozen=True)
class Event:
    """Something that happened at a moment, to mark on charts: a short label and a longer tooltip."""

    time_us: int
    label: str
    tooltip: str


@dataclass(frozen=True)
class Exemplar:
    """A measurement that names the trace it came from: its moment, its value (None: no value to plot)."""

    time_us: int
    value: float | None
    href: str
    tooltip: str


@dataclass(frozen=True)
class ExemplarDot:
    """An exemplar as drawn: a dot linking to its trace."""

    x: float
    y: float
    href: str
    tooltip: str


@dataclass(frozen=True)
class Marker:
    """An event as drawn: its x, its label's place (None: no room for the label) and its tooltip."""

    x: float
    label: str
    label_x: float | None
    label_y: float
    anchor: str  # start or end: the label runs right of the line, or left of it near the right edge
    tooltip: str


@dataclass(frozen=True)
class ChartLine:
    """A series as drawn: its path data and its points."""

    name: str
    colour: str
    path: str
    points: list[ChartPoint]


@dataclass(frozen=True)
class LineChart:
    """Everything a template needs to draw a chart: canvas and plot area, ticks, lines and a summary."""

    key: str
    title: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    lines: list[ChartLine]
    summary: str
    markers: list[Marker] = field(default_factory=list)
    start_us: int = 0  # the times at the plot's left and right edges
    end_us: int = 1
    exemplars: list[ExemplarDot] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        """Whether any series has a value."""
        return any(line.points for line in self.lines)


def nice_step(span: float, count: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) dividing `span` into about `count` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10 * power


def value_ticks(highest: float, count: int = 4, lowest: float = 0.0) -> list[float]:
    """Ticks from 0 (or a round value at or below a negative `lowest`) to a round value at or above
    `highest` (0 to 1 when there is nothing but 0)."""
    if not math.isfinite(highest) or not math.isfinite(lowest) or lowest >= 0 or highest < lowest:
        lowest = 0.0
    if not highest > 0 or not math.isfinite(highest):
        if lowest == 0:
            return [0.0, 0.25, 0.5, 0.75, 1.0]
        highest = 0.0
    step = nice_step(highest - lowest, count)
    floor = math.floor(lowest / step + 1e-9)
    top = math.ceil(highest / step - 1e-9)
    return [round(k * step, 10) for k in range(floor, top + 1)]


def time_ticks(start_us: int, end_us: int, count: int = 6) -> list[int]:
    """Round UTC times (whole minutes, hours…) inside the range, at most about `count` of them."""
    span = max(1, end_us - start_us)
    step = next((s for s in TIME_STEPS_US if span / s <= count), TIME_STEPS_US[-1])
    first = -(-start_us // step) * step
    return list(range(first, end_us + 1, step))


def clock(timestamp_us: int, seconds: bool = False) -> str:
    """A UTC time of day, HH:MM (or HH:MM:SS)."""
    moment = datetime.fromtimestamp(timestamp_us / 1e6, UTC)
    return moment.strftime("%H:%M:%S" if seconds else "%H:%M")


def line_chart(
    key: str,
    title: str,
    times_us: Sequence[int],
    series: Sequence[Series],
    fmt: Callable[[float], str],
    *,
    width: int = 460,
    height: int = 210,
    events: Sequence[Event] = (),
    span: tuple[int, int] | None = None,
    exemplars: Sequence[Exemplar] = (),
) -> LineChart:
    """A chart of the series over the times (the times are the points' x positions, increasing).

    `span` fixes the times at the left and right edges (default: the first and last time); exemplars
    with a value sit at it on the same scale, those without one on the time axis.
    """
    left, top, right, bottom = 58.0, 12.0, width - 22.0, height - 48.0
    start, end = span or ((times_us[0], times_us[-1]) if times_us else (0, 1))
    end = max(end, start + 1)
    shown_exemplars = [e for e in exemplars if start <= e.time_us <= end]
    values = [v for s in series for v in s.values if v is not None]
    values += [e.value for e in shown_exemplars if e.value is not None and math.isfinite(e.value)]
    ticks = value_ticks(max(values, default=0.0), lowest=min(values, default=0.0))
    floor, ceiling = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1.0

    def sx(t: int) -> float:
        """A time's x on the canvas."""
        return left + (t - start) / (end - start) * (right - left)

    def sy(v: float) -> float:
        """A value's y on the canvas."""
        return bottom - (v - floor) / (ceiling - floor) * (bottom - top)

    lines = []
    for one in series:
        points: list[ChartPoint] = []
        parts: list[str] = []
        pen_down = False
        for t, v in zip(times_us, one.values, strict=True):
            if v is None:
                pen_down = False
                continue
            x, y = sx(t), sy(v)
            parts.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
            points.append(ChartPoint(x, y, f"{clock(t)} UTC · {one.name} {fmt(v)}"))
        lines.append(ChartLine(one.name, one.colour, " ".join(parts), points))
    summary = "; ".join(_describe(one, fmt) for one in series)
    if shown_exemplars:
        summary += (
            f"; {len(shown_exemplars)} exemplar{'s' if len(shown_exemplars) != 1 else ''} linking to traces"
        )
    shown = sorted((e for e in events if start <= e.time_us <= end), key=lambda e: e.time_us)
    if shown:
        summary += "; " + ", ".join(f"{e.label} at {clock(e.time_us, seconds=True)}" for e in shown)
    return LineChart(
        key=key,
        title=title,
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        x_ticks=[Tick(sx(t), clock(t)) for t in time_ticks(start, end)],
        y_ticks=[Tick(sy(v), fmt(v)) for v in ticks],
        lines=lines,
        summary=f"{title}: {summary}",
        markers=place_markers([(sx(e.time_us), e) for e in shown], left, right, top),
        start_us=start,
        end_us=end,
        exemplars=[
            ExemplarDot(
                sx(e.time_us),
                sy(e.value) if e.value is not None and math.isfinite(e.value) else bottom - 5,
                e.href,
                e.tooltip,
            )
            for e in shown_exemplars
        ],
    )


MARKER_CHAR = 5.8  # estimated width of a character of a marker label (10px)
MARKER_ROWS = 3


def place_markers(at: Sequence[tuple[float, Event]], left: float, right: float, top: float) -> list[Marker]:
    """Markers for events at x positions (in time order), their labels in rows so none overlaps another."""
    row_ends = [-math.inf] * MARKER_ROWS  # where the last label of each row ends
    markers = []
    for x, event in at:
        width = MARKER_CHAR * len(event.label)
        anchor = "end" if x + 3 + width > right and x - 3 - width >= left else "start"
        begin, finish = (x - 3 - width, x - 3) if anchor == "end" else (x + 3, x + 3 + width)
        row = next((k for k, end in enumerate(row_ends) if begin > end + 4), None)
        if row is not None:
            row_ends[row] = finish
        markers.append(
            Marker(
                x=x,
                label=event.label if row is not None else "",
                label_x=(x - 3 if anchor == "end" else x + 3) if row is not None else None,
                label_y=top + 9 + 12 * (row or 0),
                anchor=anchor,
                tooltip=event.tooltip,
            )
        )
    return markers


def _describe(series: Series, fmt: Callable[[float], str]) -> str:
    """A one-line text summary of a series, for readers who cannot see the chart."""
    present = [v for v in series.values if v is not None]
    if not present:
        return f"{series.name} no data"
    return f"{series.name} latest {fmt(present[-1])}, highest {fmt(max(present))}"
