"""Processors: each takes a `SpanBatch` and returns the batch to store (`redact`: card-number masking)."""

from __future__ import annotations

from typing import Protocol

from boutique.observatory.model import SpanBatch


class Processor(Protocol):
    """One step between the queue and the store; runs on the writer thread."""

    def process(self, batch: SpanBatch) -> SpanBatch:
        """The batch to pass on (possibly changed or with spans dropped)."""
        ...
