"""Every receiver decoder, fed arbitrary input, returns a consistent `SpanBatch` or raises `PayloadError`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp import walk
from boutique.observatory.otlp.values import to_key_values
from boutique.observatory.otlp.walk_rules import WalkError
from boutique.observatory.receivers import otlp_json, otlp_proto, zipkin
from boutique.observatory.receivers.otlp_proto import PayloadError
from tests.observatory.test_walker import NOT_BUILT, assert_same, mutated

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Decoder = Callable[[bytes], SpanBatch]


def check(decoder: Decoder, data: bytes) -> SpanBatch | None:
    """Decode; a batch must be internally consistent, and the only refusal allowed is `PayloadError`."""
    try:
        batch = decoder(data)
    except PayloadError as exc:
        assert str(exc)
        return None
    assert isinstance(batch, SpanBatch)
    size = len(batch)
    assert (len(batch.trace_id), len(batch.span_id), len(batch.parent_id)) == (16 * size, 8 * size, 8 * size)
    for column in (batch.kind, batch.status, batch.start_us, batch.duration_us):
        assert len(column) == size, "columns differ in length"
    assert len(batch.resource_index) == len(batch.scope_index) == len(batch.signature) == size
    assert len(batch.body_offsets) == len(batch.operation_offsets) == size + 1
    assert batch.body_offsets[-1] == len(batch.body) and batch.operation_offsets[-1] == len(batch.operation)
    assert len(batch.resources) == len(batch.services) == len(batch.instances)
    assert all(0 <= i < len(batch.resources) for i in batch.resource_index)
    assert all(0 <= i < len(batch.scopes) for i in batch.scope_index)
    for index in range(size):
        trace_id, span_id, parent_id = (
            batch.trace_id_at(index),
            batch.span_id_at(index),
            batch.parent_id_at(index),
        )
        assert len(trace_id) == 16 and any(trace_id)
        assert len(span_id) == 8 and any(span_id)
        assert parent_id == b"" or (len(parent_id) == 8 and any(parent_id))
        batch.operation_at(index)  # valid UTF-8
    assert all(duration >= 0 for duration in batch.duration_us)
    assert all(kind <= 5 for kind in batch.kind) and all(status <= 2 for status in batch.status)
    assert batch.rejected >= 0
    return batch


def valid_request() -> bytes:
    span = Span(
        trace_id=bytes(range(1, 17)),
        span_id=bytes(range(1, 9)),
        parent_span_id=bytes(range(2, 10)),
        name="op",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_001_000_000,
        attributes=to_key_values({"a": 1, "b": "x", "c": [1.5, True], "d": {"e": b"\x00"}}),
        events=[Span.Event(time_unix_nano=1, name="ev", attributes=to_key_values({"k": "v"}))],
        links=[Span.Link(trace_id=bytes(range(3, 19)), span_id=bytes(range(3, 11)))],
        status=Status(code=Status.STATUS_CODE_ERROR, message="bad"),
    )
    resource = Resource(attributes=to_key_values({"service.name": "svc", "service.instance.id": "i-1"}))
    scope_spans = ScopeSpans(scope=InstrumentationScope(name="s", version="1"), spans=[span, span])
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope_spans])]
    )
    return request.SerializeToString()


VALID = valid_request()

# ---- strategies ----------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
weird_ids = st.sampled_from(["", "00", "0" * 16, "0" * 32, "zz", "abc", "ABCDEF0123456789", "12 34"]) | (
    st.binary(max_size=17).map(bytes.hex)
)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The usual values, with an odd one about one time in sixteen."""
    return st.integers(0, 15).flatmap(lambda pick: odd if pick == 7 else usual)


trace_ids = mostly(st.binary(min_size=16, max_size=16).map(bytes.hex), weird_ids)
span_ids = mostly(st.binary(min_size=8, max_size=8).map(bytes.hex), weird_ids)
weird_numbers = st.integers(-(2**65), 2**65) | st.integers(0, 2**64).map(str) | st.floats() | st.just("1e3")
nanos = mostly(st.integers(0, 2**63) | st.integers(0, 2**63).map(str), weird_numbers)
micros = mostly(st.integers(0, 2**50), weird_numbers)


def objects(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with the required fields, any of the optional ones and now and then an unknown key."""
    return st.fixed_dictionaries(required, optional=(optional or {}) | {"unknownField": json_scalars})


def lists(strategy: st.SearchStrategy[Any], max_size: int = 2) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, min_size=1, max_size=max_size)


scalar_values = st.one_of(
    objects({"stringValue": st.text(max_size=10)}),
    objects({"intValue": mostly(st.integers(-(2**63), 2**63 - 1), weird_numbers)}),
    objects({"doubleValue": mostly(st.floats(), weird_numbers)}),
    objects({"boolValue": st.booleans()}),
    objects({"bytesValue": st.sampled_from(["AAE=", "not base64", ""])}),
    objects({}, {"stringValue": st.text(), "intValue": weird_numbers}),
)
scalar_key_values = objects({"key": st.text(max_size=10), "value": scalar_values})
any_values = (
    scalar_values
    | objects({"arrayValue": objects({"values": lists(scalar_values)})})
    | objects({"kvlistValue": objects({"values": lists(scalar_key_values)})})
)
key_values = objects({"key": st.text(max_size=10), "value": any_values})
attribute_lists = lists(key_values)
otlp_spans = objects(
    {
        "traceId": trace_ids,
        "spanId": span_ids,
        "name": st.text(max_size=10),
        "kind": mostly(
            st.integers(0, 5), st.integers(-2, 8) | st.sampled_from(["SPAN_KIND_SERVER", "SERVER", "x"])
        ),
        "startTimeUnixNano": nanos,
        "endTimeUnixNano": nanos,
    },
    {
        "trace_id": trace_ids,
        "parentSpanId": span_ids,
        "attributes": attribute_lists,
        "events": lists(
            objects(
                {"timeUnixNano": nanos, "name": st.text(max_size=5)}, {"attributes": lists(scalar_key_values)}
            )
        ),
        "links": lists(
            objects({"traceId": trace_ids, "spanId": span_ids}, {"attributes": lists(scalar_key_values)})
        ),
        "status": objects(
            {"code": st.integers(-1, 4) | st.sampled_from(["STATUS_CODE_OK", "x"])}, {"message": st.text()}
        ),
        "traceState": st.text(max_size=5),
        "flags": mostly(st.integers(0, 2**32 - 1), weird_numbers),
        "droppedAttributesCount": mostly(st.integers(0, 2**32 - 1), weird_numbers),
    },
)
otlp_documents = objects(
    {
        "resourceSpans": lists(
            objects(
                {
                    "resource": objects({"attributes": attribute_lists}),
                    "scopeSpans": lists(
                        objects(
                            {"spans": lists(otlp_spans)}, {"scope": objects({"name": st.text(max_size=5)})}
                        ),
                        max_size=2,
                    ),
                }
            ),
            max_size=2,
        )
    }
)
endpoints = objects(
    {"serviceName": st.text(max_size=8)},
    {"ipv4": st.text(max_size=8), "ipv6": st.text(max_size=8), "port": st.integers(-1, 70000)},
)
zipkin_spans = objects(
    {
        "traceId": st.one_of(st.binary(min_size=8, max_size=8).map(bytes.hex), trace_ids),
        "id": span_ids,
        "name": st.text(max_size=8),
        "timestamp": micros,
        "duration": micros,
        "localEndpoint": endpoints,
    },
    {
        "parentId": span_ids,
        "kind": st.sampled_from(["SERVER", "CLIENT", "PRODUCER", "CONSUMER", "server", "OTHER"]),
        "remoteEndpoint": endpoints,
        "tags": st.dictionaries(
            st.sampled_from(["error", "otel.status_code", "otel.scope.name", "k"]) | st.text(max_size=5),
            st.text(max_size=8) | st.sampled_from(["OK", "ERROR"]) | json_scalars,
            max_size=4,
        ),
        "annotations": lists(
            objects(
                {
                    "timestamp": micros,
                    "value": st.text(max_size=8) | st.just('{"ev": {"a": [1, {"b": null}]}}'),
                }
            )
        ),
        "shared": st.booleans(),
        "debug": st.booleans(),
    },
)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def places(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON document, depth first."""
    found: list[tuple[Any, Any]] = []
    keys = value.keys() if isinstance(value, dict) else range(len(value)) if isinstance(value, list) else ()
    for key in keys:
        found.append((value, key))
        found.extend(places(value[key]))
    return found


def spoiled(data: st.DataObject, document: Any) -> Any:
    """The document with up to three of its values replaced by arbitrary JSON values."""
    for _ in range(data.draw(st.integers(0, 3), label="spoils")):
        spots = places(document)
        if not spots:
            break
        container, key = data.draw(st.sampled_from(spots), label="where")
        container[key] = data.draw(json_values, label="with")
    return document


# ---- OTLP/protobuf -------------------------------------------------------------------------------


def test_the_valid_request_decodes() -> None:
    batch = check(otlp_proto.decode, VALID)
    assert batch is not None and len(batch) == 2


@FUZZ
@given(st.binary(max_size=2048))
def test_otlp_proto_arbitrary_bytes(data: bytes) -> None:
    check(otlp_proto.decode, data)


@FUZZ
@given(st.data())
def test_otlp_proto_mutated_requests(data: st.DataObject) -> None:
    payload = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 6))):
        where = data.draw(st.integers(0, len(payload) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            payload[where] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del payload[where:]
            if not payload:
                break
        elif action == "insert":
            payload[where:where] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del payload[where : where + data.draw(st.integers(1, 8))]
            if not payload:
                break
    check(otlp_proto.decode, bytes(payload))


# ---- OTLP/JSON -----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=1024))
def test_otlp_json_arbitrary_bytes(data: bytes) -> None:
    check(otlp_json.decode, data)


@FUZZ
@given(json_values)
def test_otlp_json_arbitrary_json(value: Any) -> None:
    check(otlp_json.decode, dumps(value))


@FUZZ
@given(st.data())
def test_otlp_json_request_shaped_documents(data: st.DataObject) -> None:
    check(otlp_json.decode, dumps(spoiled(data, data.draw(otlp_documents))))


def test_otlp_json_survives_deep_nesting() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert check(otlp_json.decode, deep.encode()) is None
    nested: dict[str, Any] = {"stringValue": "x"}
    for _ in range(200):
        nested = {"kvlistValue": {"values": [{"key": "k", "value": nested}]}}
    span = {"traceId": "01" * 16, "spanId": "01" * 8, "attributes": [{"key": "k", "value": nested}]}
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert check(otlp_json.decode, dumps(document)) is None


# ---- Zipkin --------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=1024))
def test_zipkin_arbitrary_bytes(data: bytes) -> None:
    check(zipkin.decode, data)


@FUZZ
@given(json_values)
def test_zipkin_arbitrary_json(value: Any) -> None:
    check(zipkin.decode, dumps(value))


@FUZZ
@given(st.data())
def test_zipkin_span_shaped_documents(data: st.DataObject) -> None:
    check(zipkin.decode, dumps(spoiled(data, data.draw(lists(zipkin_spans, max_size=4)))))


def test_zipkin_survives_deep_nesting() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert check(zipkin.decode, deep.encode()) is None
    value = "{" + '"a": {' * 5000 + "}" * 5000 + "}"
    span = {"traceId": "01", "id": "01", "annotations": [{"timestamp": 1, "value": value}]}
    batch = check(zipkin.decode, dumps([span]))
    assert batch is not None and len(batch) == 1


# ---- the span walkers, compiled and pure-Python: each consistent, both the same -----------------

WALKERS = [
    pytest.param(walk.walk_python, id="python"),
    pytest.param(
        walk.walk_compiled,
        id="compiled",
        marks=pytest.mark.skipif(walk.walk_compiled is None, reason=NOT_BUILT),
    ),
]


def walked(walker: Decoder, data: bytes) -> SpanBatch | None:
    """`check` one walker (its `WalkError` is what receivers answer as `PayloadError`); the other agrees."""

    def decoder(payload: bytes) -> SpanBatch:
        try:
            return walker(payload)
        except WalkError as exc:
            raise PayloadError(str(exc)) from None

    assert_same(data)
    return check(decoder, data)


@pytest.mark.parametrize("walker", WALKERS)
def test_each_walker_walks_the_valid_request(walker: Decoder) -> None:
    batch = walked(walker, VALID)
    assert batch is not None and len(batch) == 2


@pytest.mark.parametrize("walker", WALKERS)
@FUZZ
@given(data=st.binary(max_size=2048))
def test_each_walker_on_arbitrary_bytes(walker: Decoder, data: bytes) -> None:
    walked(walker, data)


@pytest.mark.parametrize("walker", WALKERS)
@FUZZ
@given(data=st.data())
def test_each_walker_on_mutated_requests(walker: Decoder, data: st.DataObject) -> None:
    walked(walker, mutated(data, VALID))
