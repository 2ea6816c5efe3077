"""The DuckDB store and the pipeline in front of it: durability, retention, group commit, redaction."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from boutique.observatory.model import SpanBatch
from boutique.observatory.pipeline import Pipeline, QueueFull, StoreFailed
from boutique.observatory.processors.redact import CardRedactor, luhn_valid, mask_text
from boutique.observatory.receivers.otlp_proto import decode
from boutique.observatory.store.duckdb_store import DuckDBStore, Retention

VISA = "4111 1111 1111 1111"  # a test card number that passes the Luhn check


def batch(
    spans: int, start_us: int, service: str = "svc", attributes: dict[str, str] | None = None
) -> SpanBatch:
    """`spans` root spans of distinct traces starting at `start_us`, each with the attributes given."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = service
    scope = resource.scope_spans.add()
    for index in range(spans):
        span = scope.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name=f"op-{index % 3}",
            start_time_unix_nano=(start_us + index) * 1000,
            end_time_unix_nano=(start_us + index + 50) * 1000,
        )
        for key, value in (attributes or {"filler": "x" * 200}).items():
            span.attributes.add(key=key).value.string_value = value
    return decode(request.SerializeToString())


def now_us() -> int:
    return int(time.time() * 1_000_000)


def test_spans_survive_closing_and_reopening(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb")
    written = batch(50, now_us())
    store.append(written)
    store.close()
    reopened = DuckDBStore(tmp_path / "o.duckdb")
    try:
        assert reopened.stats()["spans"] == 50
        found = reopened.traces([written.trace_id_at(7)])
        assert [s.span_id for s in found[0]] == [written.span_id_at(7).hex()]
    finally:
        reopened.close()


def test_retention_by_age_drops_only_old_spans(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb", Retention(max_age_us=3600 * 1_000_000))
    now = now_us()
    store.append(batch(20, now - 2 * 3600 * 1_000_000, service="old"))
    store.append(batch(30, now - 60 * 1_000_000, service="new"))
    assert store.enforce_retention(now) == 20
    assert store.services() == ["new"]
    store.close()


def test_retention_by_size_holds_the_store_under_the_limit_while_spans_keep_coming(tmp_path: Path) -> None:
    limit = 4 << 20
    store = DuckDBStore(tmp_path / "o.duckdb", Retention(max_bytes=limit))
    now = now_us()
    for step in range(16):  # about five times the limit in all, checked after every append as when running
        store.append(batch(2500, now - (16 - step) * 10_000_000, service=f"s{step:02d}"))
        store.enforce_retention(now)
        # DuckDB frees space in 256 KiB blocks as row groups empty: the first cut may leave a block or two.
        assert store.stats()["bytes"] <= limit * (1.25 if step < 8 else 1.1)
        # Freed space is reused: the file stays a small multiple of the limit while data keeps coming.
        assert (tmp_path / "o.duckdb").stat().st_size <= 3 * limit
    services = store.services()
    assert {"s14", "s15"} <= set(services) and "s00" not in services  # the oldest went first
    store.close()


def test_the_pipeline_stores_everything_and_groups_writes(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb")
    appends: list[int] = []
    append = store.append

    def counting(batch: SpanBatch) -> None:
        appends.append(len(batch))
        append(batch)

    store.append = counting  # type: ignore[method-assign]
    pipeline = Pipeline(store, capacity_spans=100_000)
    futures = [pipeline.offer(batch(10, now_us())) for _ in range(50)]  # queued before the writer starts
    pipeline.start()
    assert [f.result(30) for f in futures] == [10] * 50
    pipeline.stop()
    assert store.stats()["spans"] == 500
    assert len(appends) < 50  # grouped into fewer store writes
    store.close()


def test_a_full_queue_refuses_without_taking_the_batch(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb")
    pipeline = Pipeline(store, capacity_spans=15)
    first = pipeline.offer(batch(10, now_us()))
    with pytest.raises(QueueFull):
        pipeline.offer(batch(10, now_us()))
    assert pipeline.queued_spans == 10 and pipeline.refused == 10
    pipeline.start()
    assert first.result(30) == 10
    pipeline.stop()
    store.close()


def test_a_failing_store_fails_the_batch_and_the_pipeline_goes_on(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb")
    append = store.append
    broken = threading.Event()
    broken.set()

    def flaky(batch: SpanBatch) -> None:
        if broken.is_set():
            broken.clear()
            raise OSError("disk full")
        append(batch)

    store.append = flaky  # type: ignore[method-assign]
    pipeline = Pipeline(store)
    pipeline.start()
    with pytest.raises(StoreFailed, match="disk full"):
        pipeline.offer(batch(5, now_us())).result(30)
    assert pipeline.offer(batch(5, now_us())).result(30) == 5
    pipeline.stop()
    assert store.stats()["spans"] == 5
    store.close()


def test_luhn_and_masking_of_card_numbers() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert mask_text(f"paid with {VISA} today") == "paid with ************1111 today"
    assert mask_text("4111-1111-1111-1111") == "************1111"
    assert mask_text("order 1234567890123 shipped") == "order 1234567890123 shipped"  # fails Luhn
    assert mask_text("tracking 12345") == "tracking 12345"


def test_card_numbers_never_reach_the_store(tmp_path: Path) -> None:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = "payment"
    span = resource.scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name=f"charge {VISA}", start_time_unix_nano=1000
    )
    span.attributes.add(key="card.number").value.string_value = VISA.replace(" ", "")
    span.attributes.add(key="amount").value.int_value = 4111111111111111  # a number, not text: kept
    nested = span.attributes.add(key="details").value.kvlist_value.values.add(key="pan")
    nested.value.string_value = VISA
    event = span.events.add(name="charged", time_unix_nano=2000)
    event.attributes.add(key="card").value.string_value = VISA
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=f"declined {VISA}"))
    store = DuckDBStore(tmp_path / "o.duckdb")
    redactor = CardRedactor()
    store.append(redactor.process(decode(request.SerializeToString())))
    stored = store.traces([span.trace_id])[0][0]
    store.close()
    assert redactor.redacted_spans == 1
    assert stored.operation == "charge ************1111"
    assert stored.attributes["card.number"] == "************1111"
    assert stored.attributes["details"] == {"pan": "************1111"}
    assert stored.events[0].attributes["card"] == "************1111"
    assert stored.status_message == "declined ************1111"
    assert stored.attributes["amount"] == 4111111111111111


def test_synthesized_tags_take_every_operator_and_an_error_attribute_stays_searchable(tmp_path: Path) -> None:
    from boutique.observatory.store.base import TagCondition, TraceQuery

    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = "svc"
    scope = resource.scope_spans.add()
    failed = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="a", kind=2)
    failed.status.code = Status.STATUS_CODE_ERROR
    timed_out = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="b", kind=3)
    timed_out.attributes.add(key="error").value.string_value = "timeout"
    store = DuckDBStore(tmp_path / "o.duckdb")
    store.append(decode(request.SerializeToString()))

    def find(*tags: TagCondition) -> list[bytes]:
        return store.find_traces(TraceQuery(tags=tags))

    assert find(TagCondition("otel.status_code", "regex", "^ERR")) == [failed.trace_id]
    assert find(TagCondition("span.kind", "prefix", "cli")) == [timed_out.trace_id]
    assert find(TagCondition("error", "=", "true")) == [failed.trace_id]
    assert find(TagCondition("error", "=", "timeout")) == [timed_out.trace_id]
    assert find(TagCondition("error", "!=", "true")) == [timed_out.trace_id]
    store.close()


def test_an_unknown_kind_or_status_code_is_stored_as_unspecified(tmp_path: Path) -> None:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="odd", kind=99)
    )
    span.status.code = -1  # type: ignore[assignment]
    decoded = decode(request.SerializeToString())
    assert (decoded.kind, decoded.status) == ([0], [0])
    store = DuckDBStore(tmp_path / "o.duckdb")
    store.append(decoded)
    assert store.stats()["spans"] == 1
    store.close()


def test_the_running_pipeline_enforces_retention_on_its_own(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "o.duckdb", Retention(max_age_us=60 * 1_000_000))
    pipeline = Pipeline(store, retention_every=0.05)
    pipeline.start()
    now = now_us()
    pipeline.offer(batch(10, now - 3600 * 1_000_000, service="stale")).result(30)
    pipeline.offer(batch(10, now, service="fresh")).result(30)
    deadline = time.monotonic() + 30
    while "stale" in store.services() and time.monotonic() < deadline:
        time.sleep(0.05)
    pipeline.stop()
    assert store.services() == ["fresh"]
    store.close()
