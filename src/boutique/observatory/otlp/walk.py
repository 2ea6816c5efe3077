"""The span walker: a serialized OTLP `ExportTraceServiceRequest` to a columnar `SpanBatch`.

`walk` is the compiled walker (`_walker`, Cython, built at install when a C compiler is there) or,
when it is not built, the pure-Python one (`walk_python`). Both follow `walk_rules` and give identical
batches and identical refusals (`WalkError`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.walk_python import walk_python
from boutique.observatory.otlp.walk_rules import WalkError

walk_compiled: Callable[[bytes], SpanBatch] | None
card_candidates_compiled: Callable[[bytes, np.ndarray], list[int]] | None
try:
    from boutique.observatory.otlp._walker import card_candidates as card_candidates_compiled
    from boutique.observatory.otlp._walker import walk as walk_compiled
except ImportError:
    walk_compiled = card_candidates_compiled = None

COMPILED = walk_compiled is not None
walk: Callable[[bytes], SpanBatch] = walk_compiled or walk_python
IMPLEMENTATION = (
    "ingest uses the compiled span walker (Cython)"
    if COMPILED
    else "compiled span walker not built (no C compiler when installed): ingest uses the pure-Python walker"
)

__all__ = [
    "COMPILED",
    "IMPLEMENTATION",
    "WalkError",
    "card_candidates_compiled",
    "walk",
    "walk_compiled",
    "walk_python",
]
