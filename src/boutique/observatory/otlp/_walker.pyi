"""Types of the compiled span walker (`_walker.pyx`)."""

import numpy as np

from boutique.observatory.model import SpanBatch

def walk(data: bytes | bytearray | memoryview) -> SpanBatch:
    """The spans of a serialized ExportTraceServiceRequest as columns; `WalkError` if it is not one."""

def card_candidates(body: bytes, offsets: np.ndarray) -> list[int]:
    """Indexes of the spans whose bytes hold a run of 13+ digits with at most one space or dash between two."""
