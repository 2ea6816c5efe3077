"""Tag signatures: a span always covers the masks of the attributes it has, and rarely others."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from boutique.observatory import tagsig
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.base import TagCondition, TraceQuery
from boutique.observatory.store.duckdb_store import DuckDBStore


def covers(signature: np.ndarray, masks: list[list[int]]) -> bool:
    """Whether the signature has every bit of one of the masks (what the SQL test asks)."""
    return any(all(int(word) & m == m for word, m in zip(signature, mask, strict=True)) for mask in masks)


def test_every_value_type_is_found_and_absent_values_mostly_are_not() -> None:
    values = {"s": "text", "i": 500, "b": True, "d": 0.25}
    pairs = [KeyValue(key=k, value=AnyValue(**{f"{t}_value": v})) for k, (t, v) in zip(
        values, [("string", "text"), ("int", 500), ("bool", True), ("double", 0.25)], strict=True
    )]  # fmt: skip
    signature = tagsig.of([p.SerializeToString() for p in pairs])
    assert covers(signature, tagsig.needle_masks("s", "text"))
    assert covers(signature, tagsig.needle_masks("i", "500"))
    assert covers(signature, tagsig.needle_masks("b", "true"))
    assert covers(signature, tagsig.needle_masks("d", "0.25"))
    misses = sum(covers(signature, tagsig.needle_masks("s", f"other-{n}")) for n in range(1000))
    assert misses < 20  # about 0.2 % expected with ~15 attributes; 4 here


def test_signatures_are_the_same_in_every_process() -> None:
    pair = KeyValue(key="http.method", value=AnyValue(string_value="GET")).SerializeToString()
    assert [int(w) for w in tagsig.of([pair])] == [int(w) for w in tagsig.of([pair])]
    assert sum(bin(int(w)).count("1") for w in tagsig.of([pair])) in (1, 2, 3, 4)  # four slots, may collide


def test_decoded_spans_carry_span_event_and_resource_attributes(tmp_path: Path) -> None:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = "svc"
    resource.resource.attributes.add(key="host.name").value.string_value = "box7"
    span = resource.scope_spans.add().spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="op")
    span.attributes.add(key="http.status_code").value.int_value = 503
    span.events.add(name="exception").attributes.add(key="exception.type").value.string_value = "Timeout"
    batch = decode(request.SerializeToString())
    (signature,) = batch.signature
    assert covers(signature, tagsig.needle_masks("http.status_code", "503"))
    assert covers(signature, tagsig.needle_masks("exception.type", "Timeout"))
    assert covers(signature, tagsig.needle_masks("host.name", "box7"))
    assert covers(signature, tagsig.needle_masks("service.name", "svc"))


def test_search_walks_back_through_time_windows_newest_first(tmp_path: Path) -> None:
    """Traces spread over three days are found newest first across the widening windows."""
    store = DuckDBStore(tmp_path / "o.duckdb")
    now = int(time.time() * 1_000_000)
    ages_minutes = [1, 5, 40, 200, 900, 3000, 4000]  # from inside the first window to days back
    trace_ids = []
    for age in ages_minutes:
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        resource.resource.attributes.add(key="service.name").value.string_value = "svc"
        start = (now - age * 60_000_000) * 1000
        span = resource.scope_spans.add().spans.add(
            trace_id=os.urandom(16), span_id=os.urandom(8), name="op", start_time_unix_nano=start,
            end_time_unix_nano=start + 1000,
        )  # fmt: skip
        span.attributes.add(key="tier").value.string_value = "gold" if age != 200 else "silver"
        trace_ids.append(span.trace_id)
        store.append(decode(request.SerializeToString()))
    gold = [t for t, age in zip(trace_ids, ages_minutes, strict=True) if age != 200]
    assert store.find_traces(TraceQuery(tags=(TagCondition("tier", "=", "gold"),), limit=10)) == gold
    assert store.find_traces(TraceQuery(tags=(TagCondition("tier", "=", "gold"),), limit=4)) == gold[:4]
    assert store.find_traces(TraceQuery(service="svc", limit=10)) == trace_ids
    assert store.find_traces(TraceQuery(tags=(TagCondition("tier", "regex", "^sil"),))) == [trace_ids[3]]
    window = TraceQuery(service="svc", start_us=now - 1000 * 60_000_000, end_us=now - 30 * 60_000_000)
    assert store.find_traces(window) == trace_ids[2:5]
    store.close()
