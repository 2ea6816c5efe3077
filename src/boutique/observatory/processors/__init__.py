"""Processors: each takes a batch of any signal and returns the batch to store (`redact`: card-number masking)."""

from __future__ import annotations

from typing import Protocol

from boutique.observatory.signals import Batch


class Processor(Protocol):
    """One step before the queue; runs on the sender's side (`Pipeline.offer`).

    A processor passes on unchanged the batches of signals it does not handle.
    """

    def process(self, batch: Batch) -> Batch:
        """The batch to pass on (possibly changed or with items dropped)."""
        ...
