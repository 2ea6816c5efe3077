"""The observatory's two span shapes: `SpanBatch` on the way in, `Span` on the way out.

Every receiver turns its wire format into a `SpanBatch`: columns of the fields the store indexes
(ids, service, operation, kind, timing, status, instance) plus, per span, the OTLP `Span` message
serialized as it arrived (attributes, events, links, status message, trace state) and its `Resource`
and `InstrumentationScope`. Keeping the body verbatim is what lets ingest run near protobuf-parse
speed: nothing is decoded that a query has not asked for. Every query API works on `Span`, the
decoded form, built from a stored row by `boutique.observatory.decode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

# OTLP SpanKind numbers and the names the Jaeger and Zipkin APIs use.
KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
KIND_NUMBERS = {name: number for number, name in KIND_NAMES.items()}

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
STATUS_NAMES = {STATUS_UNSET: "UNSET", STATUS_OK: "OK", STATUS_ERROR: "ERROR"}

ID_WIDTHS = {"trace_id": 16, "span_id": 8, "parent_id": 8}  # bytes per id in a batch's id buffers


def _empty(dtype: type) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


def _offsets() -> np.ndarray:
    return np.zeros(1, dtype=np.int64)


@dataclass(slots=True)
class SpanBatch:
    """Spans in columns, as the span walker produces them and the store appends them: no object per span.

    Ids are fixed-width slices of one buffer each: span i's trace id is `trace_id[16*i : 16*i+16]`,
    its span and parent ids the 8 bytes at `8*i` of `span_id` and `parent_id` (a parent of all zero
    bytes is a root). Operation names (UTF-8) and span bodies (the serialized OTLP `Span`) are
    concatenated, span i's at `[offsets[i], offsets[i+1])`. Resource and scope are indexes into
    `resources` / `scopes` (serialized `Resource` and `InstrumentationScope`, once per distinct one);
    `services` and `instances` name each resource. `signature` holds each span's tag signature (see
    `tagsig`): its own and its events' attributes OR-ed with its resource's.
    """

    signal: ClassVar[str] = "spans"

    size: int = 0
    trace_id: bytes = b""
    span_id: bytes = b""
    parent_id: bytes = b""
    kind: np.ndarray = field(default_factory=lambda: _empty(np.uint8))  # OTLP SpanKind, 0-5
    status: np.ndarray = field(default_factory=lambda: _empty(np.uint8))  # status code, 0-2
    start_us: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    duration_us: np.ndarray = field(default_factory=lambda: _empty(np.int64))  # never negative
    operation: bytes = b""
    operation_offsets: np.ndarray = field(default_factory=_offsets)  # int64, size + 1
    body: bytes = b""
    body_offsets: np.ndarray = field(default_factory=_offsets)  # int64, size + 1
    resource_index: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    scope_index: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    resources: list[bytes] = field(default_factory=list)
    services: list[str] = field(default_factory=list)  # per resource: service.name (or unknown_service)
    instances: list[str] = field(default_factory=list)  # per resource: service.instance.id (or "")
    scopes: list[bytes] = field(default_factory=list)
    signature: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.uint64))  # (size, 4)
    rejected: int = 0  # spans the receiver refused (reported as OTLP partial success)
    rejection: str = ""  # why, for the partial-success message

    def __len__(self) -> int:
        return self.size

    # ---- one span at a time (tests, redaction, migration: never the ingest path) ---------------

    def trace_id_at(self, i: int) -> bytes:
        """Span i's 16-byte trace id."""
        return self.trace_id[16 * i : 16 * i + 16]

    def span_id_at(self, i: int) -> bytes:
        """Span i's 8-byte span id."""
        return self.span_id[8 * i : 8 * i + 8]

    def parent_id_at(self, i: int) -> bytes:
        """Span i's 8-byte parent id, b"" for a root."""
        parent = self.parent_id[8 * i : 8 * i + 8]
        return b"" if parent == ROOT_PARENT else parent

    def operation_at(self, i: int) -> str:
        """Span i's name."""
        return self.operation[self.operation_offsets[i] : self.operation_offsets[i + 1]].decode()

    def body_at(self, i: int) -> bytes:
        """Span i's serialized OTLP `Span`."""
        return self.body[self.body_offsets[i] : self.body_offsets[i + 1]]

    def service_at(self, i: int) -> str:
        """The service.name of span i's resource."""
        return self.services[self.resource_index[i]]

    def instance_at(self, i: int) -> str:
        """The service.instance.id of span i's resource."""
        return self.instances[self.resource_index[i]]

    def resource_at(self, i: int) -> bytes:
        """Span i's serialized `Resource`."""
        return self.resources[self.resource_index[i]]

    def scope_at(self, i: int) -> bytes:
        """Span i's serialized `InstrumentationScope`."""
        return self.scopes[self.scope_index[i]]

    def reject(self, count: int, reason: str) -> None:
        """Note `count` spans refused for `reason` (the first reason is kept)."""
        self.rejected += count
        self.rejection = self.rejection or reason

    def replace_spans(self, changes: dict[int, tuple[bytes, str]]) -> None:
        """Give some spans a new body and name (redaction): the two buffers are rebuilt once."""
        if not changes:
            return
        self.body, self.body_offsets = _rebuilt(
            self.body, self.body_offsets, {i: body for i, (body, _) in changes.items()}
        )
        self.operation, self.operation_offsets = _rebuilt(
            self.operation, self.operation_offsets, {i: name.encode() for i, (_, name) in changes.items()}
        )

    @classmethod
    def concat(cls, batches: Sequence[SpanBatch]) -> SpanBatch:
        """One batch holding the spans of all, in order (a group commit writes it in one append)."""
        batches = [b for b in batches if b.size] or list(batches[:1])
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return cls()
        resources: list[bytes] = []
        scopes: list[bytes] = []
        resource_index, scope_index = [], []
        for b in batches:
            resource_index.append(b.resource_index + len(resources))
            scope_index.append(b.scope_index + len(scopes))
            resources += b.resources
            scopes += b.scopes
        return cls(
            size=sum(b.size for b in batches),
            trace_id=b"".join(b.trace_id for b in batches),
            span_id=b"".join(b.span_id for b in batches),
            parent_id=b"".join(b.parent_id for b in batches),
            kind=np.concatenate([b.kind for b in batches]),
            status=np.concatenate([b.status for b in batches]),
            start_us=np.concatenate([b.start_us for b in batches]),
            duration_us=np.concatenate([b.duration_us for b in batches]),
            operation=b"".join(b.operation for b in batches),
            operation_offsets=_joined_offsets([b.operation_offsets for b in batches]),
            body=b"".join(b.body for b in batches),
            body_offsets=_joined_offsets([b.body_offsets for b in batches]),
            resource_index=np.concatenate(resource_index).astype(np.int32),
            scope_index=np.concatenate(scope_index).astype(np.int32),
            resources=resources,
            services=[s for b in batches for s in b.services],
            instances=[s for b in batches for s in b.instances],
            scopes=scopes,
            signature=np.concatenate([b.signature for b in batches]),
            rejected=sum(b.rejected for b in batches),
            rejection=next((b.rejection for b in batches if b.rejection), ""),
        )


ROOT_PARENT = bytes(8)  # the parent id a root span has in a batch


def _joined_offsets(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Offsets of concatenated buffers: each part shifted by the bytes before it."""
    out = [parts[0]]
    end = int(parts[0][-1])
    for offsets in parts[1:]:
        out.append(offsets[1:] + end)
        end += int(offsets[-1])
    return np.concatenate(out).astype(np.int64)


def _rebuilt(buffer: bytes, offsets: np.ndarray, changes: dict[int, bytes]) -> tuple[bytes, np.ndarray]:
    """A concatenated buffer and its offsets with some entries replaced."""
    pieces = []
    lengths = np.diff(offsets)
    previous = 0
    for index in sorted(changes):
        pieces.append(buffer[offsets[previous] : offsets[index]])
        pieces.append(changes[index])
        lengths[index] = len(changes[index])
        previous = index + 1
    pieces.append(buffer[offsets[previous] : offsets[-1]])
    return b"".join(pieces), np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


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
