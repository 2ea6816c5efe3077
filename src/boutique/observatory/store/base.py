"""The store interface the pipeline writes to and the query APIs read from, and its query types."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import duckdb

from boutique.observatory.model import STATUS_NAMES, Span
from boutique.observatory.signals import Batch

T = TypeVar("T")

TagOp = Literal["=", "!=", "prefix", "regex"]
TAG_OPS: tuple[TagOp, ...] = ("=", "!=", "prefix", "regex")


def tag_text(value: Any) -> str:
    """A tag value as text, the way search conditions compare it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class TagCondition:
    """One tag condition of a search: `key op value` against span, resource and event attributes.

    `=` needs the key with that value; `!=` the key with another value; `prefix` a value starting
    with `value`; `regex` a value matching the regular expression `value` anywhere (re.search).
    """

    key: str
    op: TagOp
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in TAG_OPS:
            raise ValueError(f"unknown tag operator {self.op!r}")
        if self.op == "regex":
            try:
                object.__setattr__(self, "pattern", re.compile(self.value))
            except re.error as exc:
                raise ValueError(f"tag {self.key}: invalid regular expression: {exc}") from None

    def test(self, value: Any) -> bool:
        """Whether one attribute value satisfies the condition."""
        text = tag_text(value)
        if self.op == "=":
            return text == self.value
        if self.op == "!=":
            return text != self.value
        if self.op == "prefix":
            return text.startswith(self.value)
        assert self.pattern is not None
        return self.pattern.search(text) is not None

    def matches(self, span: Span) -> bool:
        """Whether the span (its attributes, resource, any event, or a tag synthesized from its kind and
        status: span.kind, otel.status_code, error) has the key with a satisfying value."""
        synthesized = {
            "span.kind": span.kind_name,
            "otel.status_code": STATUS_NAMES.get(span.status, "UNSET"),
        }
        if span.is_error:
            synthesized["error"] = "true"
        for values in (span.attributes, span.resource, *(e.attributes for e in span.events), synthesized):
            if self.key in values and self.test(values[self.key]):
                return True
        return False


@dataclass(frozen=True)
class TraceQuery:
    """Find traces holding a span that meets every condition.

    Ordered newest first, or with `order="duration"` by the duration of their longest matching span.
    """

    service: str | None = None
    operation: str | None = None
    span_kind: int | None = None
    tags: tuple[TagCondition, ...] = ()
    min_duration_us: int | None = None
    max_duration_us: int | None = None
    start_us: int | None = None
    end_us: int | None = None
    limit: int = 100
    errors_only: bool = False
    instance: str | None = None
    order: Literal["start", "duration"] = "start"


@dataclass(frozen=True)
class Dependency:
    """Calls from spans of `parent` to child spans of `child` in a window, and how many of those failed."""

    parent: str
    child: str
    calls: int
    errors: int


@dataclass(frozen=True)
class RedPoint:
    """Rate/error/duration figures of one time step (of one operation when grouped)."""

    service: str
    operation: str  # "" when not grouped by operation
    timestamp_us: int  # end of the step
    calls: int
    errors: int
    quantiles: dict[float, float]  # quantile → latency in ms


@dataclass(frozen=True)
class WriteState:
    """Whether the store takes writes now; when not, why, since when, and the storage engine's own words."""

    writable: bool = True
    reason: str = ""  # "disk full", "read-only file system", "write failed" when not writable
    error: str = ""  # the first error that made it read-only, verbatim
    since: float | None = None  # Unix time writes began to fail
    reopens: int = 0  # times the database was reopened since the process started
    waiting: str = ""  # what recovery waits for, when it knows (e.g. free space for a checkpoint)

    @property
    def summary(self) -> str:
        """`writable`, or `read-only: <reason>` (what health answers and `boutique up` shows)."""
        return "writable" if self.writable else f"read-only: {self.reason}"


class StoreReadOnly(Exception):
    """The store takes no writes now (see `WriteState`); reads still work. Retryable."""


class StoreBroken(Exception):
    """The store can be neither written nor reopened: the process should exit and be restarted."""


class Store(Protocol):
    """Where spans go and where queries read them; appends come from one writer thread."""

    def append(self, batch: Batch) -> None:
        """Store a batch of any signal durably (returns once it survives a crash)."""
        ...

    def read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work` with a read cursor (the queries of the logs and metrics modules)."""
        ...

    def services(self) -> list[str]:
        """Every service with stored spans, sorted."""
        ...

    def operations(self, service: str | None, span_kind: int | None = None) -> list[tuple[str, int]]:
        """(operation, kind) pairs of a service (all services when None), sorted."""
        ...

    def find_traces(self, query: TraceQuery) -> list[bytes]:
        """Ids of the traces matching the query, best first, at most `query.limit`."""
        ...

    def search(self, query: TraceQuery) -> list[list[Span]]:
        """The spans of each matching trace, in `find_traces` order."""
        ...

    def traces(self, trace_ids: Sequence[bytes]) -> list[list[Span]]:
        """The spans of each trace that has any, in the order asked, each sorted by start."""
        ...

    def dependencies(self, start_us: int, end_us: int) -> list[Dependency]:
        """Service-to-service call counts from parent/child spans that started in the window."""
        ...

    def red(
        self,
        services: Sequence[str],
        start_us: int,
        end_us: int,
        step_us: int,
        quantiles: Sequence[float],
        by_operation: bool,
        span_kinds: Sequence[int],
    ) -> list[RedPoint]:
        """Per-step calls, errors and latency quantiles of the services' spans of the given kinds."""
        ...

    def enforce_retention(self, now_us: int) -> int:
        """Drop spans older than the age limit, then the oldest until under the size limit; spans dropped."""
        ...

    def stats(self) -> dict[str, int]:
        """Spans stored and bytes used."""
        ...

    def write_state(self) -> WriteState:
        """Whether appends can succeed now (cheap: no I/O)."""
        ...

    def recover(self) -> WriteState:
        """While read-only: probe whether writes work again and reopen if need be; the state after.

        Raises `StoreBroken` when the store cannot be reopened at all.
        """
        ...

    def close(self) -> None:
        """Flush and release the store."""
        ...
