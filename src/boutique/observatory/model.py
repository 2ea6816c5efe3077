"""The observatory's two span shapes: `SpanBatch` on the way in, `Span` on the way out.

Every receiver turns its wire format into a `SpanBatch`: columns of the fields the store indexes
(ids, service, operation, kind, timing, status, instance) plus, per span, the OTLP `Span` message
serialized as it arrived (attributes, events, links, status message, trace state) and its `Resource`
and `InstrumentationScope`. Keeping the body verbatim is what lets ingest run near protobuf-parse
speed: nothing is decoded that a query has not asked for. Every query API works on `Span`, the
decoded form, built from a stored row by `boutique.observatory.decode`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# OTLP SpanKind numbers and the names the Jaeger and Zipkin APIs use.
KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
KIND_NUMBERS = {name: number for number, name in KIND_NAMES.items()}

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
STATUS_NAMES = {STATUS_UNSET: "UNSET", STATUS_OK: "OK", STATUS_ERROR: "ERROR"}

BATCH_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_id",
    "service",
    "operation",
    "kind",
    "start_us",
    "duration_us",
    "status",
    "instance",
    "body",
    "resource",
    "scope",
)


@dataclass(slots=True)
class SpanBatch:
    """Spans in columns, as every receiver produces them and the store appends them.

    Ids are raw bytes (16 for a trace, 8 for a span; `parent_id` is b"" for a root). `body` holds the
    serialized OTLP `Span`; `resource` and `scope` the serialized `Resource` and `InstrumentationScope`
    (the same bytes object is shared by the spans of one resource or scope). `signature` holds the
    spans' tag signatures (see `tagsig`) in blocks whose rows add up to the spans, in order.
    """

    trace_id: list[bytes] = field(default_factory=list)
    span_id: list[bytes] = field(default_factory=list)
    parent_id: list[bytes] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    operation: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    start_us: list[int] = field(default_factory=list)
    duration_us: list[int] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    instance: list[str] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    resource: list[bytes] = field(default_factory=list)
    scope: list[bytes] = field(default_factory=list)
    signature: list[np.ndarray] = field(default_factory=list)  # (n, tagsig.WORDS) blocks, one row per span
    rejected: int = 0  # spans the receiver refused (reported as OTLP partial success)
    rejection: str = ""  # why, for the partial-success message

    def __len__(self) -> int:
        return len(self.span_id)

    def columns(self) -> dict[str, list[Any]]:
        """The columns by name, in `BATCH_COLUMNS` order."""
        return {name: getattr(self, name) for name in BATCH_COLUMNS}

    def extend(self, other: SpanBatch) -> None:
        """Append another batch's spans (used to group batches into one store write)."""
        for name in BATCH_COLUMNS:
            getattr(self, name).extend(getattr(other, name))
        self.signature.extend(other.signature)
        self.rejected += other.rejected

    def reject(self, count: int, reason: str) -> None:
        """Note `count` spans refused for `reason` (the first reason is kept)."""
        self.rejected += count
        self.rejection = self.rejection or reason


@dataclass(slots=True)
class Event:
    """A span event (a Jaeger log, a Zipkin annotation)."""

    time_us: int
    name: str
    attributes: dict[str, Any]


@dataclass(slots=True)
class Link:
    """A link to another span (Jaeger FOLLOWS_FROM reference)."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(slots=True)
class Span:
    """One stored span, decoded: what every query API formats. Ids are lower-case hex."""

    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    service: str
    operation: str
    kind: int
    start_us: int
    duration_us: int
    status: int
    status_message: str = ""
    instance: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    events: list[Event] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    trace_state: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def kind_name(self) -> str:
        """`server`, `client`, … (`unspecified` for 0)."""
        return KIND_NAMES.get(self.kind, "unspecified")

    @property
    def is_error(self) -> bool:
        """Whether the span's status is ERROR."""
        return self.status == STATUS_ERROR

    @property
    def end_us(self) -> int:
        """Start plus duration."""
        return self.start_us + self.duration_us
