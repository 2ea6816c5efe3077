"""`MetricBatch`: the data points of one OTLP metrics request (or several), on their way to the store.

A data point belongs to a time series: one instrument (name, kind, temporality) of one instance of a
service, with one set of attributes. A batch lists each series it touches once (`Series`, keyed by a
hash of that identity) and its points as rows in `POINT_COLUMNS` order, with the exemplars they carry
as rows in `EXEMPLAR_COLUMNS` order: the shape `metrics.table` inserts in one statement per table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

Kind = Literal["sum", "gauge", "histogram", "exponential_histogram", "summary"]
KINDS: tuple[Kind, ...] = ("sum", "gauge", "histogram", "exponential_histogram", "summary")
Temporality = Literal["cumulative", "delta", ""]

POINT_COLUMNS = (
    "series_key",
    "time_us",
    "start_us",  # 0 when the sender did not say
    "value",  # sums and gauges
    "count",  # histograms and summaries (below: their other fields)
    "sum",
    "min",
    "max",
    "bounds",  # explicit bucket bounds
    "counts",  # explicit bucket counts, one more than bounds
    "scale",  # exponential histograms: base = 2**(2**-scale)
    "zero_count",
    "zero_threshold",
    "positive_offset",
    "positive_counts",
    "negative_offset",
    "negative_counts",
    "quantiles",  # summaries: the quantiles (0..1) and their values
    "quantile_values",
)
EXEMPLAR_COLUMNS = ("series_key", "time_us", "value", "trace_id", "span_id", "attributes")
PointRow = tuple[Any, ...]  # one value per POINT_COLUMNS entry, None where the kind has none
ExemplarRow = tuple[int, int, float, bytes | None, bytes | None, str]


def attributes_json(values: dict[str, Any]) -> str:
    """Attributes as canonical JSON text (sorted keys), the form series are keyed and stored by."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Series:
    """One time series: whose, which instrument, which attributes (JSON text), and its resource."""

    service: str
    instance: str
    name: str
    kind: Kind
    temporality: Temporality
    monotonic: bool
    scope: str
    attributes: str  # canonical JSON object
    unit: str = ""
    description: str = ""
    resource: str = "{}"  # the resource's attributes, JSON object
    key: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", series_key(self))

    def row(self) -> tuple[Any, ...]:
        """The series as a row of `SERIES_COLUMNS`."""
        return (
            self.key,
            self.service,
            self.instance,
            self.name,
            self.kind,
            self.temporality,
            self.monotonic,
            self.scope,
            self.attributes,
            self.unit,
            self.description,
            self.resource,
        )


SERIES_COLUMNS = (
    "series_key",
    "service",
    "instance",
    "name",
    "kind",
    "temporality",
    "monotonic",
    "scope",
    "attributes",
    "unit",
    "description",
    "resource",
)


def series_key(series: Series) -> int:
    """The series' identity as an unsigned 64-bit number (BLAKE2b of what makes it one series)."""
    identity = json.dumps(
        [
            series.service,
            series.instance,
            series.scope,
            series.name,
            series.kind,
            series.temporality,
            series.monotonic,
            series.attributes,
        ],
        separators=(",", ":"),
    )
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest(), "little")


@dataclass
class MetricBatch:
    """Data points of one signal batch: the series they belong to, the points, their exemplars."""

    signal: ClassVar[str] = "metrics"

    series: dict[int, Series] = field(default_factory=dict)
    points: list[PointRow] = field(default_factory=list)
    exemplars: list[ExemplarRow] = field(default_factory=list)
    rejected: int = 0  # data points refused (OTLP partial success `rejected_data_points`)
    rejection: str = ""

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def concat(cls, batches: Sequence[Self]) -> Self:
        """One batch of all these (series listed once)."""
        joined = cls()
        reasons: list[str] = []
        for batch in batches:
            joined.series.update(batch.series)
            joined.points.extend(batch.points)
            joined.exemplars.extend(batch.exemplars)
            joined.rejected += batch.rejected
            if batch.rejection and batch.rejection not in reasons:
                reasons.append(batch.rejection)
        joined.rejection = "; ".join(reasons)
        return joined
