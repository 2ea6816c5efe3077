"""The card-number prefilter: the compiled scan and the Python one pick the same spans to check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.walk import card_candidates_compiled
from boutique.observatory.processors.redact import card_candidates_python

needs_compiled = pytest.mark.skipif(
    card_candidates_compiled is None,
    reason="the compiled span walker is not built: install a C compiler and the Python headers, then `make`",
)


def bodies_batch(bodies: list[bytes]) -> SpanBatch:
    """A batch holding only the given span bodies (all the prefilter reads)."""
    offsets = np.concatenate(([0], np.cumsum([len(b) for b in bodies]))).astype(np.int64)
    return SpanBatch(size=len(bodies), body=b"".join(bodies), body_offsets=offsets)


CASES = [
    b"\x0acard 4111 1111 1111 1111 ok",
    b"\x0a4111-1111-1111-1111",
    b"\x0a4111111111111",  # 13 digits
    b"\x0a411111111111",  # 12 digits: no
    b"\x0a4111  1111 1111 1111",  # two spaces break the run: 4 + 12
    b"\x0a4 1 1 1 1 1 1 1 1 1 1 1 1",  # 13 digits, one space between each
    b"\x0a4 -1111111111111",  # a space and a dash in a row break the run
    b"",
    b"1234567",
    b"890123456\x0a",  # with the span before: a run across two spans counts in neither
]


@needs_compiled
def test_the_compiled_scan_flags_the_spans_the_regular_expression_does() -> None:
    batch = bodies_batch(CASES)
    assert card_candidates_compiled is not None
    found = card_candidates_compiled(batch.body, batch.body_offsets)
    assert found == card_candidates_python(batch) == [0, 1, 2, 5, 6]


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet="0123456789 -x\n", max_size=60).map(str.encode) | st.binary(max_size=60), max_size=12
    )
)
def test_both_scans_agree_on_any_bytes(bodies: list[bytes]) -> None:
    batch = bodies_batch(bodies)
    assert card_candidates_compiled is not None
    assert card_candidates_compiled(batch.body, batch.body_offsets) == card_candidates_python(batch)
