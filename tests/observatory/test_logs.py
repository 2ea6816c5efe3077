"""Log records in: OTLP protobuf and JSON decoded to a `LogBatch`, redacted, stored, queried back."""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from boutique.observatory.logs import query as q
from boutique.observatory.logs.decode import BAD_IDS, decode, decode_json
from boutique.observatory.logs.model import COLUMNS, LogBatch, severity_name
from boutique.observatory.otlp.values import to_key_values
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.processors.redact import CardRedactor
from boutique.observatory.receivers.otlp_proto import PayloadError
from boutique.observatory.store.duckdb_store import DuckDBStore, Retention

NOW_US = time.time_ns() // 1000
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
VISA = "4111 1111 1111 1111"


def record(body: Any = "hello", at_us: int = NOW_US, **fields: Any) -> LogRecord:
    """A log record with a string (or any AnyValue) body at `at_us`."""
    value = body if isinstance(body, AnyValue) else AnyValue(string_value=body)
    return LogRecord(
        time_unix_nano=at_us * 1000, observed_time_unix_nano=at_us * 1000 + 500, body=value, **fields
    )


def request(
    records: list[LogRecord], service: str | None = "cart", instance: str = "cart-1", scope: str = "shop.cart"
) -> ExportLogsServiceRequest:
    """One resource (service, instance) and one scope holding the records."""
    out = ExportLogsServiceRequest()
    resource_logs = out.resource_logs.add()
    attributes = {"service.instance.id": instance, "host.name": "box"}
    if service is not None:
        attributes["service.name"] = service
    resource_logs.resource.attributes.extend(to_key_values(attributes))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = scope
    scope_logs.log_records.extend(records)
    return out


def decoded(records: list[LogRecord], **resource: Any) -> LogBatch:
    return decode(request(records, **resource).SerializeToString())


# ---- decoding ----------------------------------------------------------------------------------


def test_a_protobuf_request_becomes_records_with_every_field() -> None:
    rich = record(
        "card declined",
        severity_number=SeverityNumber.SEVERITY_NUMBER_WARN,
        severity_text="WARNING",
        trace_id=TRACE,
        span_id=SPAN,
        attributes=to_key_values(
            {"http.status_code": 402, "retry": True, "ratio": 0.5, "tags": ["a", 1], "raw": b"\x00\x01"}
        ),
    )
    batch = decoded([rich, record(AnyValue())], service="payment", instance="payment-2", scope="pay")
    assert len(batch) == 2 and batch.rejected == 0
    assert batch.time_us == [NOW_US, NOW_US]
    assert batch.observed_us == [NOW_US, NOW_US]  # 500 ns later: the same microsecond
    assert batch.severity == [13, 0] and batch.severity_text == ["WARNING", ""]
    assert batch.body == ["card declined", ""]
    assert json.loads(batch.attributes[0]) == {
        "http.status_code": 402,
        "retry": True,
        "ratio": 0.5,
        "tags": ["a", 1],
        "raw": base64.b64encode(b"\x00\x01").decode(),
    }
    assert batch.trace_id == [TRACE, b""] and batch.span_id == [SPAN, b""]
    assert batch.scope == ["pay", "pay"]
    assert [batch.service_at(i) for i in range(2)] == ["payment", "payment"]
    resource = batch.resources[batch.resource_index[0]]
    assert resource.instance == "payment-2"
    assert json.loads(resource.attributes)["host.name"] == "box"


def test_bodies_that_are_not_strings_are_kept_as_json_text() -> None:
    structured = AnyValue()
    structured.kvlist_value.values.extend(
        to_key_values({"event": "checkout", "items": 3, "nan": float("nan")})
    )
    batch = decoded([record(structured), record(AnyValue(int_value=42)), record(AnyValue(bytes_value=b"hi"))])
    assert json.loads(batch.body[0]) == {"event": "checkout", "items": 3, "nan": "NaN"}
    assert batch.body[1:] == ["42", json.dumps(base64.b64encode(b"hi").decode())]


def test_the_service_falls_back_as_for_spans_and_times_fall_back_to_observed_then_arrival() -> None:
    no_time = LogRecord(observed_time_unix_nano=NOW_US * 1000, body=AnyValue(string_value="x"))
    no_times = LogRecord(body=AnyValue(string_value="y"))
    before = time.time_ns() // 1000
    batch = decoded([no_time, no_times], service=None)
    assert batch.service_at(0) == "unknown_service"
    assert batch.time_us[0] == NOW_US and batch.observed_us[0] == NOW_US
    assert before <= batch.time_us[1] <= time.time_ns() // 1000
    assert batch.observed_us[1] == batch.time_us[1]
    empty_name = request([record()], service="")
    assert decode(empty_name.SerializeToString()).service_at(0) == "unknown_service"


def test_bad_id_lengths_are_refused_record_by_record_and_zero_ids_mean_none() -> None:
    records = [
        record("good", trace_id=TRACE, span_id=SPAN),
        record("short trace", trace_id=TRACE[:8], span_id=SPAN),
        record("long span", trace_id=TRACE, span_id=SPAN + b"\x01"),
        record("zeros", trace_id=bytes(16), span_id=bytes(8)),
        record("no ids"),
    ]
    batch = decoded(records)
    assert batch.body == ["good", "zeros", "no ids"]
    assert batch.rejected == 2 and batch.rejection == BAD_IDS
    assert batch.trace_id == [TRACE, b"", b""] and batch.span_id == [SPAN, b"", b""]


def test_a_resource_whose_records_are_all_refused_is_not_kept() -> None:
    out = request([record("bad", trace_id=b"\x01")], service="gone")
    out.resource_logs.extend(request([record("kept")], service="kept").resource_logs)
    batch = decode(out.SerializeToString())
    assert batch.body == ["kept"] and batch.rejected == 1
    assert [r.service for r in batch.resources] == ["kept"] and batch.service_at(0) == "kept"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # a tag with field number 0 and a truncated varint
        b"\x0a\x05\x01",  # a length beyond the end
        request([record("\u00e9")]).SerializeToString().replace("\u00e9".encode(), b"\xc3\x28"),  # bad UTF-8
    ],
)
def test_malformed_protobuf_is_a_payload_error(payload: bytes) -> None:
    with pytest.raises(PayloadError, match="not an OTLP ExportLogsServiceRequest"):
        decode(payload)


def otlp_json(**record_fields: Any) -> dict[str, Any]:
    """An OTLP/JSON logs request in the spec's encoding: hex ids, int64 as strings, enums by name."""
    log_record = {
        "timeUnixNano": str(NOW_US * 1000),
        "observedTimeUnixNano": str(NOW_US * 1000),
        "severityNumber": "SEVERITY_NUMBER_ERROR",
        "severityText": "ERROR",
        "body": {"stringValue": "payment failed"},
        "attributes": [
            {"key": "attempt", "value": {"intValue": "3"}},
            {"key": "user", "value": {"stringValue": "u-1"}},
        ],
        "traceId": TRACE.hex(),
        "spanId": SPAN.hex(),
        "unknownField": 1,
        **record_fields,
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]}
    scope_logs = {"scope": {"name": "shop.checkout"}, "logRecords": [log_record]}
    return {"resourceLogs": [{"resource": resource, "scopeLogs": [scope_logs]}]}


def test_the_json_form_decodes_like_the_protobuf_one() -> None:
    from_json = decode_json(json.dumps(otlp_json()).encode())
    from_proto = decoded(
        [
            LogRecord(
                time_unix_nano=NOW_US * 1000,
                observed_time_unix_nano=NOW_US * 1000,
                severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR,
                severity_text="ERROR",
                body=AnyValue(string_value="payment failed"),
                attributes=to_key_values({"attempt": 3, "user": "u-1"}),
                trace_id=TRACE,
                span_id=SPAN,
            )
        ],
        service="checkout",
        scope="shop.checkout",
    )
    for name in COLUMNS:
        assert getattr(from_json, name) == getattr(from_proto, name), name
    assert from_json.service_at(0) == "checkout" and from_json.scope == ["shop.checkout"]
    numbered = decode_json(json.dumps(otlp_json(severityNumber=9, timeUnixNano=NOW_US * 1000)).encode())
    assert numbered.severity == [9] and numbered.time_us == [NOW_US]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "the request must be a JSON object, not an array"),
        (b'{"resourceLogs": {}}', "resourceLogs must be a JSON array, not an object"),
        (json.dumps(otlp_json(traceId="xyz")).encode(), "traceId is not hex"),
        (json.dumps(otlp_json(spanId=7)).encode(), r"logRecords\[0\]\.spanId must be a hex string, not int"),
        (json.dumps(otlp_json(timeUnixNano={"a": 1})).encode(), "not an OTLP/JSON ExportLogsServiceRequest"),
        (json.dumps(otlp_json(severityNumber=[9])).encode(), "Failed to parse severityNumber field"),
        (json.dumps(otlp_json(severityText=5)).encode(), "Failed to parse severityText field"),
        (json.dumps(otlp_json(body={"intValue": "x"})).encode(), "Failed to parse intValue field"),
        (
            json.dumps(otlp_json(body="text")).encode(),
            r"logRecords\[0\]\.body must be a JSON object, not a string",
        ),
    ],
)
def test_bad_json_and_wrong_types_are_payload_errors_that_say_what(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_json(body)


def test_a_json_id_of_the_wrong_length_refuses_only_its_record() -> None:
    document = otlp_json(traceId="abcd")
    records = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    records.append({"body": {"stringValue": "fine"}, "timeUnixNano": str(NOW_US * 1000)})
    batch = decode_json(json.dumps(document).encode())
    assert batch.body == ["fine"] and batch.rejected == 1


def test_severity_names_follow_otlp() -> None:
    assert [severity_name(n) for n in (0, 1, 4, 5, 9, 10, 13, 17, 21, 24, 25)] == [
        "",
        "TRACE",
        "TRACE4",
        "DEBUG",
        "INFO",
        "INFO2",
        "WARN",
        "ERROR",
        "FATAL",
        "FATAL4",
        "",
    ]


# ---- redaction ---------------------------------------------------------------------------------


def test_card_numbers_are_masked_in_bodies_and_string_attributes_only() -> None:
    nested = AnyValue()
    nested.kvlist_value.values.extend(to_key_values({"pan": VISA, "list": [VISA.replace(" ", "-")]}))
    card = record(
        f"charging {VISA} now",
        attributes=to_key_values(
            {"card": VISA.replace(" ", ""), "amount": 4111111111111111, "order": "1234567890123"}
        ),
    )
    card.attributes.add(key="details").value.CopyFrom(nested)
    batch = decoded([card, record("nothing here"), record("timestamp 1733262739123 is not a card")])
    redactor = CardRedactor()
    assert redactor.process(batch) is batch
    assert redactor.redacted_logs == 1
    assert batch.body == [
        "charging ************1111 now",
        "nothing here",
        "timestamp 1733262739123 is not a card",
    ]
    attributes = json.loads(batch.attributes[0])
    assert attributes["card"] == "************1111"
    assert attributes["details"] == {"pan": "************1111", "list": ["************1111"]}
    assert attributes["amount"] == 4111111111111111  # a number, not text: kept as for spans
    assert attributes["order"] == "1234567890123"  # fails the Luhn check


# ---- the store -----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "observatory.duckdb")
    yield opened
    opened.close()


def through_pipeline(store: DuckDBStore, *batches: LogBatch) -> None:
    """Store the batches the way receivers do: offered to a pipeline behind the redactor, then waited for."""
    pipeline = Pipeline(store, [CardRedactor()])
    pipeline.start()
    try:
        futures = [pipeline.offer(batch) for batch in batches]
        assert sum(f.result(30) for f in futures) == sum(len(b) for b in batches)
    finally:
        pipeline.stop()


def find(store: DuckDBStore, **conditions: Any) -> list[dict[str, Any]]:
    return store.read(lambda cursor: q.find(cursor, q.LogQuery(**conditions)))


def shop_logs() -> list[LogBatch]:
    """Three services' records over three minutes, some inside a trace."""
    other_trace = os.urandom(16)
    cart = [
        record(
            "added 2 items",
            NOW_US - 180_000_000,
            severity_number=9,
            attributes=to_key_values({"user": "ann"}),
        ),
        record("cart is slow", NOW_US - 120_000_000, severity_number=13, trace_id=TRACE, span_id=SPAN),
        record("Cart Saved", NOW_US - 60_000_000, severity_number=5, attributes=to_key_values({"items": 2})),
    ]
    payment = [
        record(
            f"charged {VISA}", NOW_US - 90_000_000, severity_number=9, trace_id=TRACE, span_id=os.urandom(8)
        ),
        record(
            "declined 100%_sure", NOW_US - 30_000_000, severity_number=17, trace_id=other_trace, span_id=SPAN
        ),
    ]
    email = [
        record("sent", NOW_US - 10_000_000, severity_number=21, attributes=to_key_values({"user": "bob"}))
    ]
    return [
        decoded(cart),
        decoded(payment, service="payment", instance="payment-1"),
        decoded(email, service="email"),
    ]


def bodies(found: list[dict[str, Any]]) -> list[str]:
    return [r["body"] for r in found]


def test_stored_records_answer_every_filter_newest_first(store: DuckDBStore) -> None:
    through_pipeline(store, *shop_logs())
    assert bodies(find(store)) == [
        "sent",
        "declined 100%_sure",
        "Cart Saved",
        "charged ************1111",
        "cart is slow",
        "added 2 items",
    ]
    assert bodies(find(store, service="cart")) == ["Cart Saved", "cart is slow", "added 2 items"]
    assert bodies(find(store, min_severity=13)) == ["sent", "declined 100%_sure", "cart is slow"]
    assert bodies(find(store, text="CART")) == ["Cart Saved", "cart is slow"]
    assert bodies(find(store, text="100%_s")) == ["declined 100%_sure"]  # LIKE's wildcards are plain text
    assert bodies(find(store, text="0%_")) == ["declined 100%_sure"]
    assert bodies(find(store, text="%")) == ["declined 100%_sure"]
    assert bodies(find(store, tags=(("user", "ann"),))) == ["added 2 items"]
    assert bodies(find(store, tags=(("items", "2"),))) == ["Cart Saved"]  # numbers compare as text
    assert bodies(find(store, tags=(("service.instance.id", "payment-1"),))) == [
        "declined 100%_sure",
        "charged ************1111",
    ]
    assert bodies(find(store, tags=(("user", "ann"), ("host.name", "box")))) == ["added 2 items"]
    assert find(store, tags=(("user", "nobody"),)) == []
    assert bodies(find(store, trace_id=TRACE)) == ["charged ************1111", "cart is slow"]
    assert bodies(find(store, trace_id=TRACE, span_id=SPAN)) == ["cart is slow"]
    assert bodies(find(store, span_id=SPAN)) == ["declined 100%_sure", "cart is slow"]
    window = find(store, start_us=NOW_US - 120_000_000, end_us=NOW_US - 30_000_000)
    assert bodies(window) == ["declined 100%_sure", "Cart Saved", "charged ************1111", "cart is slow"]
    assert bodies(find(store, limit=2)) == ["sent", "declined 100%_sure"]
    assert store.read(q.services) == ["cart", "email", "payment"]


def test_a_record_comes_back_in_the_api_shape(store: DuckDBStore) -> None:
    through_pipeline(store, *shop_logs())
    [slow] = find(store, text="slow")
    assert slow == {
        "time": NOW_US - 120_000_000,
        "observedTime": NOW_US - 120_000_000,
        "service": "cart",
        "instance": "cart-1",
        "severity": "WARN",
        "severityNumber": 13,
        "body": "cart is slow",
        "attributes": {},
        "resource": {"service.instance.id": "cart-1", "host.name": "box", "service.name": "cart"},
        "scope": "shop.cart",
        "traceID": TRACE.hex(),
        "spanID": SPAN.hex(),
    }


def test_the_tail_reads_each_commit_once_in_time_order(store: DuckDBStore) -> None:
    through_pipeline(store, *shop_logs())
    after = store.read(q.last_stored)
    assert store.read(lambda c: q.stored_since(c, q.LogQuery(), after)) == ([], after, 0)
    late = decoded([record("late but old", NOW_US - 500_000_000), record("late and new", NOW_US)])
    through_pipeline(store, late, decoded([record("filtered out", NOW_US + 1)], service="email"))
    found, upto, more = store.read(lambda c: q.stored_since(c, q.LogQuery(service="cart"), after))
    assert bodies(found) == ["late but old", "late and new"] and upto > after and more == 0
    assert store.read(lambda c: q.stored_since(c, q.LogQuery(), upto)) == ([], upto, 0)
    capped, _, more = store.read(lambda c: q.stored_since(c, q.LogQuery(limit=2), after))
    assert bodies(capped) == ["late and new", "filtered out"] and more == 1


def test_records_survive_closing_the_store(tmp_path: Path) -> None:
    path = tmp_path / "observatory.duckdb"
    first = DuckDBStore(path)
    through_pipeline(first, *shop_logs())
    seq = first.read(q.last_stored)
    first.close()
    again = DuckDBStore(path)
    try:
        assert len(find(again)) == 6
        through_pipeline(again, decoded([record("after reopening")]))
        assert again.read(q.last_stored) > seq
    finally:
        again.close()


def test_age_retention_removes_old_records(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "observatory.duckdb", Retention(max_age_us=100_000_000))
    try:
        through_pipeline(store, *shop_logs())  # 180 s to 10 s old
        store.enforce_retention(NOW_US)
        assert bodies(find(store)) == ["sent", "declined 100%_sure", "Cart Saved", "charged ************1111"]
        store.enforce_retention(NOW_US + 85_000_000)
        assert bodies(find(store)) == ["sent"]
        assert store.read(q.services) == ["email"]
    finally:
        store.close()


def test_batches_joined_for_one_commit_keep_each_records_resource() -> None:
    first, second = (
        decoded([record("a"), record("b")]),
        decoded([record("c")], service="email", instance="e-1"),
    )
    second.rejected, second.rejection = 2, BAD_IDS
    joined = LogBatch.concat([first, second])
    assert len(joined) == 3 and joined.body == ["a", "b", "c"]
    assert [joined.service_at(i) for i in range(3)] == ["cart", "cart", "email"]
    assert joined.resources[joined.resource_index[2]].instance == "e-1"
    assert (joined.rejected, joined.rejection) == (2, BAD_IDS)


def test_hostile_payloads_are_decoded_or_refused_never_anything_else() -> None:
    """Random corruptions of valid requests (protobuf and JSON) give a batch or a `PayloadError`."""
    rng = random.Random(17)
    rich = request(
        [record(f"line {VISA}", trace_id=TRACE, span_id=SPAN, attributes=to_key_values({"a": [1]}))]
    )
    samples = [(decode, rich.SerializeToString()), (decode_json, json.dumps(otlp_json()).encode())]
    outcomes = {"decoded": 0, "refused": 0}
    for decoder, valid in samples:
        for _ in range(400):
            corrupt = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(len(corrupt))
                choice = rng.random()
                if choice < 0.5:
                    corrupt[at] = rng.randrange(256)
                elif choice < 0.75:
                    del corrupt[at]
                else:
                    corrupt[at:at] = bytes([rng.randrange(256)])
            try:
                decoder(bytes(corrupt))
                outcomes["decoded"] += 1
            except PayloadError:
                outcomes["refused"] += 1
    print(outcomes)
    assert outcomes["refused"] > 0
