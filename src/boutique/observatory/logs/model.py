"""Log records as the pipeline carries them: a `LogBatch` of columns, one Python list per field.

Logs come at a fraction of the volume of spans, so the batch stays plain: each record's indexed fields
in lists, its attributes already as JSON text (what the store keeps and queries), and its resource as
an index into the batch's resources (service, instance and attributes, decoded once per resource).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from boutique.observatory.signals import join_rows

# OTLP SeverityNumber ranges: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL.
SEVERITY_BASES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
MAX_SEVERITY = 24


def severity_name(number: int) -> str:
    """The short OTLP name of a severity number (INFO, INFO2, ..., FATAL4); "" for 0 (unspecified)."""
    if not 1 <= number <= MAX_SEVERITY:
        return ""
    base, step = divmod(number - 1, 4)
    name = list(SEVERITY_BASES)[base]
    return name if step == 0 else f"{name}{step + 1}"


@dataclass(frozen=True)
class LogResource:
    """A resource the records of a batch come from: its service, instance and attributes (JSON text)."""

    service: str
    instance: str
    attributes: str


@dataclass
class LogBatch:
    """Log records decoded from one request (or joined for one commit): a `signals.Batch`."""

    signal: ClassVar[str] = "logs"

    time_us: list[int] = field(default_factory=list)
    observed_us: list[int] = field(default_factory=list)
    severity: list[int] = field(default_factory=list)  # OTLP SeverityNumber, 0..24
    severity_text: list[str] = field(default_factory=list)  # as sent ("" when not)
    body: list[str] = field(default_factory=list)  # a string body as is, any other as JSON text
    attributes: list[str] = field(default_factory=list)  # JSON object text
    scope: list[str] = field(default_factory=list)  # instrumentation scope name
    trace_id: list[bytes] = field(default_factory=list)  # 16 bytes, or b"" when the record has none
    span_id: list[bytes] = field(default_factory=list)  # 8 bytes, or b""
    resource_index: list[int] = field(default_factory=list)  # into `resources`
    resources: list[LogResource] = field(default_factory=list)
    rejected: int = 0  # records of the request refused (OTLP partial success)
    rejection: str = ""

    def __len__(self) -> int:
        return len(self.time_us)

    @classmethod
    def concat(cls, batches: Sequence[Self]) -> Self:
        """One batch of all these records (resources renumbered, rejections summed)."""
        return join_rows(cls(), batches, COLUMNS)

    def service_at(self, index: int) -> str:
        """The service of record `index`."""
        return self.resources[self.resource_index[index]].service


COLUMNS = (  # a batch's per-record columns besides resource_index
    "time_us",
    "observed_us",
    "severity",
    "severity_text",
    "body",
    "attributes",
    "scope",
    "trace_id",
    "span_id",
)
