"""Where tail sampling goes: a processor that decides per trace which spans to keep.

The default keeps everything. A sampler that keeps every trace with an error or above a latency and
a share of the rest plugs in here (`TailSampler`), seeing each batch before it is stored.
"""

from __future__ import annotations

from typing import Protocol

from boutique.observatory.model import SpanBatch


class TailSampler(Protocol):
    """Decides which spans of a batch to keep."""

    def process(self, batch: SpanBatch) -> SpanBatch:
        """The batch with the spans to keep."""
        ...


class KeepAll:
    """The default sampler: every span is kept."""

    def process(self, batch: SpanBatch) -> SpanBatch:
        """The batch unchanged."""
        return batch
