"""The span walkers, compiled and pure-Python: identical batches and refusals, and the rules they share.

Real payloads come from the OpenTelemetry SDK's own OTLP encoder; hand-built ones cover what the SDK
never sends (events and links everywhere, many resources and scopes, odd ids, kinds and codes, fields
twice, unknown fields and groups); hostile ones are random, mutated, truncated or deeply nested. upb
(protobuf's parser) is the reference for what is a valid request.
"""

from __future__ import annotations

import os
import shutil
import struct
import sysconfig
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from boutique.observatory import tagsig
from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp import walk
from boutique.observatory.otlp.light import Request as LightRequest
from boutique.observatory.otlp.light import Resource as LightResource
from boutique.observatory.otlp.values import to_key_values
from boutique.observatory.otlp.walk_python import CLASSES
from boutique.observatory.otlp.walk_rules import BAD_IDS, MAX_DEPTH, UNKNOWN_SERVICE, WalkError

Walker = Callable[[bytes], SpanBatch]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOT_BUILT = (
    "the compiled span walker is not built: install a C compiler and the Python headers "
    "(e.g. apt-get install gcc python3-dev), then reinstall (rm .venv/.installed* && make test)"
)
needs_compiled = pytest.mark.skipif(walk.walk_compiled is None, reason=NOT_BUILT)


# ---- comparing outcomes ----------------------------------------------------------------------------


def outcome(walker: Walker, data: bytes) -> dict[str, Any] | str:
    """Every field of the batch a walker makes of `data` (arrays as dtype, shape and values), or "refused"."""
    try:
        batch = walker(data)
    except WalkError as exc:
        assert str(exc)
        return "refused"
    fields: dict[str, Any] = {}
    for name in SpanBatch.__slots__:  # type: ignore[attr-defined]
        value = getattr(batch, name)
        fields[name] = (
            (value.dtype.str, value.shape, value.tolist()) if isinstance(value, np.ndarray) else value
        )
    return fields


def assert_same(data: bytes) -> dict[str, Any] | str:
    """Both walkers make the same of `data` (when the compiled one is built); what the Python one made."""
    expected = outcome(walk.walk_python, data)
    if walk.walk_compiled is not None:
        actual = outcome(walk.walk_compiled, data)
        if actual != expected and isinstance(actual, dict) and isinstance(expected, dict):
            differing = [name for name in expected if actual[name] != expected[name]]
            raise AssertionError(f"the walkers differ in {differing}")
        assert actual == expected
    return expected


def upb_accepts(data: bytes) -> bool:
    """Whether upb parses `data`, and each resource in it, with the schema of `walk_rules`."""
    try:
        request = CLASSES["Request"].FromString(data)
        for resource_spans in request.resource_spans:
            CLASSES["Resource"].FromString(resource_spans.resource)
    except DecodeError:
        return False
    return True


# ---- wire format by hand ---------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A base-128 varint (negative numbers as 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        if value < 0x80:
            out.append(value)
            return bytes(out)
        out.append(value & 0x7F | 0x80)
        value >>= 7


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def fixed64(number: int, value: int) -> bytes:
    return tag(number, 1) + struct.pack("<Q", value)


def groups(number: int, depth: int) -> bytes:
    """`depth` groups nested in each other, each closed."""
    return tag(number, 3) * depth + tag(number, 4) * depth


def request(*resource_spans: bytes) -> bytes:
    return b"".join(delimited(1, r) for r in resource_spans)


def resource_spans(resource: bytes | None, *scopes: bytes, extra: bytes = b"") -> bytes:
    head = delimited(1, resource) if resource is not None else b""
    return head + b"".join(delimited(2, s) for s in scopes) + extra


def scope_spans(scope: bytes | None, *spans: bytes, extra: bytes = b"") -> bytes:
    head = delimited(1, scope) if scope is not None else b""
    return head + b"".join(delimited(2, s) for s in spans) + extra


def span_bytes(trace: bytes = b"\x01" * 16, span: bytes = b"\x02" * 8, *rest: bytes) -> bytes:
    return delimited(1, trace) + delimited(2, span) + b"".join(rest)


def key_value(key: bytes, value: bytes) -> bytes:
    return delimited(1, key) + delimited(2, value)


def identity(service: str = "svc", instance: str = "i-1") -> bytes:
    """A serialized Resource with service.name and service.instance.id."""
    return Resource(
        attributes=to_key_values({"service.name": service, "service.instance.id": instance})
    ).SerializeToString()


# ---- real payloads: the OpenTelemetry SDK's own encoder --------------------------------------------


def sdk_payloads() -> list[bytes]:
    """Requests the SDK's OTLP exporter would send: two services, scopes, events, links, errors."""
    spans = []
    for service, instance in (("frontend", "f-1"), ("cartservice", "c-7")):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(
            resource=SdkResource.create({"service.name": service, "service.instance.id": instance, "n": 3})
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope, version in (("http", "1.0"), ("grpc", "0.48b0")):
            tracer = provider.get_tracer(scope, version)
            with tracer.start_as_current_span(f"GET /{service}", kind=SpanKind.SERVER) as root:
                root.set_attributes({"http.method": "GET", "http.status_code": 200, "ratio": 0.5, "ok": True})
                root.set_attribute("tags", ["a", "b"])
                root.add_event("message", {"message.type": "SENT", "message.id": 1})
                with tracer.start_as_current_span("child ✓ ünïcode", kind=SpanKind.CLIENT) as child:
                    child.set_status(StatusCode.ERROR, "upstream failed")
                    child.record_exception(RuntimeError("boom"))
                linked = tracer.start_span(
                    "consume", kind=SpanKind.CONSUMER, links=[Link(root.get_span_context())]
                )
                linked.set_status(StatusCode.OK)
                linked.end()
        spans += exporter.get_finished_spans()
        provider.shutdown()
    assert len(spans) == 12
    return [encode_spans(spans).SerializeToString(), encode_spans(spans[:1]).SerializeToString()]


SDK_PAYLOADS = sdk_payloads()


def old_signatures(data: bytes) -> np.ndarray:
    """Tag signatures computed span by span with `tagsig` the way the decoder did before the walker."""
    rows = []
    for resource_spans in LightRequest.FromString(data).resource_spans:
        extra = tagsig.of(list(LightResource.FromString(resource_spans.resource).attributes))
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                pairs = list(span.attributes) + [a for event in span.events for a in event.attributes]
                rows.append(tagsig.signatures(pairs, [len(pairs)], extra)[0])
    return np.array(rows, dtype=np.uint64).reshape(-1, tagsig.WORDS)


@pytest.mark.parametrize("data", SDK_PAYLOADS, ids=["twelve-spans", "one-span"])
def test_sdk_payloads_walk_the_same_and_match_protobuf(data: bytes) -> None:
    fields = assert_same(data)
    assert isinstance(fields, dict)
    batch = walk.walk(data)
    parsed = ExportTraceServiceRequest.FromString(data)
    spans = [
        (rs.resource, scope.scope, span)
        for rs in parsed.resource_spans
        for scope in rs.scope_spans
        for span in scope.spans
    ]
    assert len(batch) == len(spans) and batch.rejected == 0 and batch.rejection == ""
    for i, (resource, scope, span) in enumerate(spans):
        assert batch.trace_id_at(i) == span.trace_id and batch.span_id_at(i) == span.span_id
        assert batch.parent_id_at(i) == span.parent_span_id
        assert batch.operation_at(i) == span.name
        assert Span.FromString(batch.body_at(i)) == span
        assert batch.kind[i] == span.kind and batch.status[i] == span.status.code
        assert batch.start_us[i] == span.start_time_unix_nano // 1000
        assert batch.duration_us[i] == (span.end_time_unix_nano - span.start_time_unix_nano) // 1000
        assert Resource.FromString(batch.resource_at(i)) == resource
        assert InstrumentationScope.FromString(batch.scope_at(i)) == scope
        service = {kv.key: kv.value.string_value for kv in resource.attributes}["service.name"]
        assert batch.service_at(i) == service
    if len(spans) == 12:
        assert batch.services == ["frontend", "cartservice"] and batch.instances == ["f-1", "c-7"]
        assert len(batch.scopes) == 2  # the same two scopes in both resources
    assert np.array_equal(batch.signature, old_signatures(data))
    assert batch.signature.dtype == np.uint64 and batch.signature.shape == (len(spans), tagsig.WORDS)


def test_bodies_are_the_spans_bytes_as_they_arrived() -> None:
    unknown = tag(99, 0) + varint(7)  # an unknown field first: a re-serialized span would move it
    first = unknown + span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(5, b"op"))
    second = span_bytes(b"\x03" * 16, b"\x04" * 8, fixed64(8, 5_000), fixed64(7, 1_000))
    data = request(resource_spans(identity(), scope_spans(b"", first, second)))
    assert_same(data)
    batch = walk.walk(data)
    assert [batch.body_at(0), batch.body_at(1)] == [first, second]
    assert batch.operation_at(0) == "op" and batch.operation_at(1) == ""
    assert batch.start_us.tolist() == [0, 1] and batch.duration_us.tolist() == [0, 4]


def test_many_resources_and_scopes_are_listed_once_each_in_order_of_use() -> None:
    def spans(n: int) -> list[bytes]:
        return [span_bytes(os.urandom(16), os.urandom(8)) for _ in range(n)]

    bad = span_bytes(b"\x00" * 16, b"\x02" * 8)
    data = request(
        resource_spans(identity("a"), scope_spans(b"s1", *spans(2)), scope_spans(b"s2", *spans(1))),
        resource_spans(identity("unused"), scope_spans(b"s3", bad)),  # only a refused span: not listed
        resource_spans(identity("b"), scope_spans(b"s2", *spans(1)), scope_spans(b"s1")),
        resource_spans(identity("a"), scope_spans(b"s1", *spans(1))),
        resource_spans(None, scope_spans(None, *spans(1))),
    )
    assert_same(data)
    batch = walk.walk(data)
    assert batch.services == ["a", "b", UNKNOWN_SERVICE] and batch.instances == ["i-1", "i-1", ""]
    assert batch.resources == [identity("a"), identity("b"), b""]
    assert batch.resource_index.tolist() == [0, 0, 0, 1, 0, 2]
    assert batch.scopes == [b"s1", b"s2", b""]
    assert batch.scope_index.tolist() == [0, 0, 1, 1, 0, 2]
    assert (batch.rejected, batch.rejection) == (1, BAD_IDS)


@pytest.mark.parametrize(
    ("trace", "span", "kept"),
    [
        (b"\x01" * 16, b"\x02" * 8, True),
        (b"\xff" * 16, b"\xff" * 8, True),  # the largest ids
        (b"\x00" * 16, b"\x02" * 8, False),
        (b"\x01" * 16, b"\x00" * 8, False),
        (b"\x01" * 15, b"\x02" * 8, False),
        (b"\x01" * 17, b"\x02" * 8, False),
        (b"\x01" * 16, b"\x02" * 9, False),
        (b"", b"", False),
        (b"\x01" * 32, b"\x02" * 16, False),
    ],
)
def test_ids_are_kept_or_refused_one_by_one(trace: bytes, span: bytes, kept: bool) -> None:
    good = span_bytes(os.urandom(16), os.urandom(8))
    data = request(resource_spans(identity(), scope_spans(b"", good, span_bytes(trace, span), good)))
    fields = assert_same(data)
    assert isinstance(fields, dict)
    assert fields["size"] == (3 if kept else 2) and fields["rejected"] == (0 if kept else 1)
    assert fields["rejection"] == ("" if kept else BAD_IDS)


@pytest.mark.parametrize(
    ("parent", "root"),
    [(b"\x05" * 8, False), (b"\x00" * 8, True), (b"\x05" * 7, True), (b"\x05" * 16, True), (b"", True)],
)
def test_a_parent_that_is_not_eight_bytes_or_all_zero_makes_a_root(parent: bytes, root: bool) -> None:
    data = request(
        resource_spans(None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(4, parent))))
    )
    assert_same(data)
    assert walk.walk(data).parent_id_at(0) == (b"" if root else parent)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [(0, 0), (5, 5), (6, 0), (-1, 0), (2**31 - 1, 0), (2**32 + 3, 3), (2**64 - 1, 0), (2**63 + 2, 2)],
)
def test_kinds_are_int32_and_unknown_ones_unspecified(kind: int, expected: int) -> None:
    data = request(
        resource_spans(
            None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, tag(6, 0) + varint(kind)))
        )
    )
    assert_same(data)
    assert walk.walk(data).kind.tolist() == [expected]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([tag(3, 0) + varint(2)], 2),
        ([tag(3, 0) + varint(3)], 0),
        ([tag(3, 0) + varint(-1)], 0),
        ([tag(3, 0) + varint(2**32 + 1)], 1),
        ([tag(3, 0) + varint(2), delimited(2, b"again")], 2),  # a status given twice is merged
        ([tag(3, 0) + varint(2), tag(3, 0) + varint(0)], 0),
        ([tag(3, 0) + varint(0)], 0),
        ([delimited(3, varint(2))], 0),  # a code sent length-delimited is an unknown field
        ([fixed64(3, 2)], 0),
        ([b""], 0),
    ],
)
def test_status_codes_are_int32_merged_and_unknown_ones_unset(statuses: list[bytes], expected: int) -> None:
    fields = span_bytes(b"\x01" * 16, b"\x02" * 8, *[delimited(15, s) for s in statuses])
    data = request(resource_spans(None, scope_spans(None, fields)))
    assert_same(data)
    assert walk.walk(data).status.tolist() == [expected]


def test_times_are_microseconds_and_durations_never_negative() -> None:
    top = 2**64 - 1
    cases = [(1_500, 3_499, 1, 1), (5_000, 1_000, 5, 0), (0, top, 0, top // 1000), (top, top, top // 1000, 0)]
    spans = [span_bytes(os.urandom(16), os.urandom(8), fixed64(7, s), fixed64(8, e)) for s, e, _, _ in cases]
    data = request(resource_spans(None, scope_spans(None, *spans)))
    assert_same(data)
    batch = walk.walk(data)
    assert batch.start_us.tolist() == [c[2] for c in cases]
    assert batch.duration_us.tolist() == [c[3] for c in cases]


def test_a_field_given_twice_keeps_its_last_value() -> None:
    fields = span_bytes(
        b"\x00" * 16,
        b"\x00" * 8,
        delimited(5, b"first"),
        tag(6, 0) + varint(3),
        delimited(1, b"\x07" * 16),
        delimited(2, b"\x08" * 8),
        delimited(5, b"second"),
        tag(6, 0) + varint(2),
    )
    twice = (
        delimited(1, identity("one"))
        + delimited(2, scope_spans(b"x", fields))
        + delimited(1, identity("two"))
    )
    data = request(twice)
    assert_same(data)
    batch = walk.walk(data)
    assert (batch.trace_id_at(0), batch.span_id_at(0)) == (b"\x07" * 16, b"\x08" * 8)
    assert batch.operation_at(0) == "second" and batch.kind.tolist() == [2]
    assert batch.services == ["two"] and batch.resources == [identity("two")]


def test_known_fields_with_another_wire_type_are_skipped() -> None:
    fields = span_bytes(
        b"\x01" * 16,
        b"\x02" * 8,
        tag(5, 0) + varint(1),  # name as a varint
        delimited(6, varint(3)),  # kind length-delimited
        tag(7, 0) + varint(10),  # start as a varint
        tag(9, 5) + b"\x00" * 4,  # an attribute as fixed32
        tag(15, 3) + tag(3, 0) + varint(2) + tag(15, 4),  # status as a group
        tag(11, 1) + b"\x00" * 8,
    )
    data = request(resource_spans(b"\x08\x01", scope_spans(None, fields)), tag(1, 5) + b"\x00" * 4)
    fields_out = assert_same(data)
    assert isinstance(fields_out, dict) and fields_out["size"] == 1
    batch = walk.walk(data)
    assert batch.operation_at(0) == "" and batch.kind.tolist() == [0] and batch.status.tolist() == [0]
    assert batch.start_us.tolist() == [0] and not batch.signature.any()


def test_signatures_cover_span_event_and_resource_attributes() -> None:
    attribute = key_value(b"http.method", delimited(1, b"GET"))
    exception = key_value(b"exception.type", delimited(1, b"Timeout"))
    event = delimited(2, b"exception") + delimited(3, exception)
    resource = Resource(
        attributes=to_key_values({"service.name": "svc", "host.name": "box7"})
    ).SerializeToString()
    fields = span_bytes(
        b"\x01" * 16, b"\x02" * 8, delimited(9, attribute), delimited(11, event), delimited(11, b"")
    )
    data = request(resource_spans(resource, scope_spans(None, fields, span_bytes(b"\x03" * 16, b"\x04" * 8))))
    assert_same(data)
    batch = walk.walk(data)
    resource_pairs = [kv.SerializeToString() for kv in Resource.FromString(resource).attributes]
    assert np.array_equal(batch.signature[0], tagsig.of([attribute, exception, *resource_pairs]))
    assert np.array_equal(batch.signature[1], tagsig.of(resource_pairs))
    assert np.array_equal(batch.signature, old_signatures(data))


@pytest.mark.parametrize(
    "attributes",
    [
        [b""],  # an empty attribute hashes like the separator the Python walker uses
        [key_value(b"k", b""), b""],
        [bytes.fromhex("9d0ad96d")],  # hashes to 0
    ],
)
def test_attributes_the_fast_python_path_cannot_split_are_read_span_by_span(attributes: list[bytes]) -> None:
    assert any(zlib.crc32(a) == 0 for a in attributes)
    spans = [
        span_bytes(b"\x01" * 16, b"\x02" * 8, *[delimited(9, a) for a in attributes]),
        span_bytes(b"\x03" * 16, b"\x04" * 8, delimited(9, b"x"), delimited(11, delimited(3, b""))),
        span_bytes(b"\x05" * 16, b"\x06" * 8, delimited(15, tag(3, 0) + varint(0))),
    ]
    data = request(resource_spans(None, scope_spans(None, *spans)))
    assert_same(data)
    assert np.array_equal(walk.walk(data).signature, old_signatures(data))


@pytest.mark.parametrize(
    ("resource", "service", "instance"),
    [
        (identity("svc", "i-9"), "svc", "i-9"),
        (identity("", "i-9"), UNKNOWN_SERVICE, "i-9"),
        (b"", UNKNOWN_SERVICE, ""),
        (
            Resource(
                attributes=to_key_values({"service.name": 3, "service.instance.id": 4})
            ).SerializeToString(),
            UNKNOWN_SERVICE,
            "",
        ),
        (identity("a", "x") + identity("", "y"), "a", "y"),  # the last non-empty name, the last instance
        (
            identity("a", "x")
            + Resource(attributes=to_key_values({"service.instance.id": True})).SerializeToString(),
            "a",
            "",
        ),
        # a value given twice is merged: the oneof member set last counts
        (
            delimited(
                1, key_value(b"service.name", delimited(1, b"s")) + delimited(2, tag(3, 0) + varint(1))
            ),
            UNKNOWN_SERVICE,
            "",
        ),
        (
            delimited(
                1, key_value(b"service.name", tag(3, 0) + varint(1)) + delimited(2, delimited(1, b"t"))
            ),
            "t",
            "",
        ),
        (delimited(1, delimited(2, delimited(1, b"u")) + delimited(1, b"service.name")), "u", ""),
        (
            delimited(1, key_value(b"service.name", delimited(1, b"v") + delimited(6, b""))),
            UNKNOWN_SERVICE,
            "",
        ),
        (delimited(1, key_value(b"service.name", delimited(1, b"w") + tag(2, 1) + b"\x00" * 8)), "w", ""),
        (delimited(1, key_value(b"service.name", delimited(1, "ünï".encode()))), "ünï", ""),
    ],
)
def test_service_and_instance_of_a_resource(resource: bytes, service: str, instance: str) -> None:
    data = request(resource_spans(resource, scope_spans(None, span_bytes())))
    assert_same(data)
    batch = walk.walk(data)
    assert (batch.services, batch.instances) == ([service], [instance])


MALFORMED_REQUESTS = {
    "truncated": SDK_PAYLOADS[0][:-3],
    "varint of eleven bytes": tag(5, 0) + b"\xff" * 10 + b"\x01",
    "tag of six bytes": b"\xa8\x80\x80\x80\x80\x00\x01",
    "tag past 32 bits": b"\xf8\xff\xff\xff\x1f\x01",
    "field number 0": b"\x00\x01",
    "wire type 6": b"\x2e",
    "wire type 7": b"\x2f",
    "end of a group never opened": tag(5, 4),
    "group closed by another number": tag(5, 3) + tag(6, 4),
    "group never closed": tag(5, 3),
    "length past the end": tag(5, 2) + varint(10) + b"abc",
    "length past its message": request(resource_spans(None, tag(2, 2) + varint(3) + b"\x12\x05")),
    "fixed64 cut short": tag(5, 1) + b"1234567",
    "varint across its message's end": request(
        resource_spans(None, scope_spans(None, tag(6, 0) + b"\x80", extra=b"\x08\x01"))
    ),
    "span name not UTF-8": request(
        resource_spans(
            None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(5, b"\xc3\x28")))
        )
    ),
    "surrogate in a name": request(
        resource_spans(
            None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(5, b"\xed\xa0\x80")))
        )
    ),
    "overlong in a name": request(
        resource_spans(
            None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(5, b"\xc0\x80")))
        )
    ),
    "past U+10FFFF in a name": request(
        resource_spans(
            None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(5, b"\xf4\x90\x80\x80")))
        )
    ),
    "status message not UTF-8": request(
        resource_spans(
            None,
            scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(15, delimited(2, b"\xff")))),
        )
    ),
    "refused span still malformed": request(resource_spans(None, scope_spans(None, delimited(5, b"\xff")))),
    "resource key not UTF-8": request(resource_spans(delimited(1, key_value(b"\xff", b"")))),
    "resource value not UTF-8": request(resource_spans(delimited(1, key_value(b"k", delimited(1, b"\xff"))))),
    "resource attribute malformed": request(resource_spans(delimited(1, b"\x0a\x05"))),
    "unused resource malformed": request(
        resource_spans(b"\x0a\x05"), resource_spans(None, scope_spans(None, span_bytes()))
    ),
    "groups past the depth limit": groups(5, MAX_DEPTH + 1),
    "groups in a status past the limit": request(
        resource_spans(
            None,
            scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(15, groups(9, MAX_DEPTH - 3)))),
        )
    ),
    "groups in a resource value past the limit": request(
        resource_spans(delimited(1, key_value(b"k", groups(9, MAX_DEPTH - 1))))
    ),
}

ACCEPTED_ODDITIES = {
    "empty": b"",
    "varint of ten bytes": tag(5, 0) + b"\xff" * 9 + b"\x7f",
    "tag of five bytes": b"\xa8\x80\x80\x80\x00\x01",
    "groups at the depth limit": groups(5, MAX_DEPTH),
    "groups in a status at the limit": request(
        resource_spans(
            None,
            scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(15, groups(9, MAX_DEPTH - 4)))),
        )
    ),
    "groups in a resource value at the limit": request(
        resource_spans(delimited(1, key_value(b"k", groups(9, MAX_DEPTH - 2))))
    ),
    "event name not UTF-8 (kept in the body, unread)": request(
        resource_spans(
            None,
            scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(11, delimited(2, b"\xff")))),
        )
    ),
    "scope not a message (kept as bytes)": request(
        resource_spans(None, scope_spans(b"\xff\xff", span_bytes()))
    ),
    "span attribute not a message (kept as bytes)": request(
        resource_spans(None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(9, b"\xff"))))
    ),
    "unicode name": request(
        resource_spans(
            None,
            scope_spans(
                None, span_bytes(b"\x01" * 16, b"\x02" * 8, delimited(5, "GET /ü/€/😀 \x00".encode()))
            ),
        )
    ),
    "unknown fields everywhere": request(
        resource_spans(
            None,
            scope_spans(
                None,
                span_bytes(b"\x01" * 16, b"\x02" * 8, tag(1000, 5) + b"\x00" * 4),
                extra=tag(77, 0) + b"\x01",
            ),
            extra=fixed64(99, 1),
        )
    )
    + tag(2**29 - 1, 0)
    + b"\x00",
}


@pytest.mark.parametrize("data", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_malformed_requests_are_refused_by_both_as_by_upb(data: bytes) -> None:
    assert not upb_accepts(data)
    assert assert_same(data) == "refused"
    with pytest.raises(WalkError):
        walk.walk(data)


@pytest.mark.parametrize("data", ACCEPTED_ODDITIES.values(), ids=ACCEPTED_ODDITIES.keys())
def test_odd_but_valid_requests_are_accepted_by_both_as_by_upb(data: bytes) -> None:
    assert upb_accepts(data)
    assert assert_same(data) != "refused"


# ---- hostile payloads ------------------------------------------------------------------------------


def mutated(data: st.DataObject, payload: bytes) -> bytes:
    """The payload with up to six bytes flipped, cut, inserted or deleted."""
    out = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        if not out:
            break
        where = data.draw(st.integers(0, len(out) - 1), label="where")
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]), label="action")
        if action == "flip":
            out[where] = data.draw(st.integers(0, 255), label="byte")
        elif action == "cut":
            del out[where:]
        elif action == "insert":
            out[where:where] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        else:
            del out[where : where + data.draw(st.integers(1, 8), label="count")]
    return bytes(out)


def known_request() -> bytes:
    """A protobuf-built request with everything the walker reads."""
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
    scope = ScopeSpans(scope=InstrumentationScope(name="s", version="1"), spans=[span, span])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
    ).SerializeToString()


SEEDS = [known_request(), *SDK_PAYLOADS]


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    assert (assert_same(data) == "refused") == (not upb_accepts(data))


@FUZZ
@given(st.data())
def test_mutated_real_payloads(data: st.DataObject) -> None:
    payload = mutated(data, data.draw(st.sampled_from(SEEDS), label="seed"))
    assert (assert_same(payload) == "refused") == (not upb_accepts(payload))


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 10_000))
def test_truncated_real_payloads(payload: bytes, cut: int) -> None:
    data = payload[: cut % (len(payload) + 1)]
    assert (assert_same(data) == "refused") == (not upb_accepts(data))


# Requests built field by field: known fields with their own and other wire types, fields twice,
# unknown fields, groups, odd ids, names, kinds, codes and resources.
def _wire_field(number: int) -> st.SearchStrategy[bytes]:
    """One field with this number, of any wire type and a small value."""
    return st.one_of(
        st.integers(0, 2**64 - 1).map(lambda v: tag(number, 0) + varint(v)),
        st.integers(0, 2**64 - 1).map(lambda v: fixed64(number, v)),
        st.binary(max_size=12).map(lambda b: delimited(number, b)),
        st.integers(0, 2**32 - 1).map(lambda v: tag(number, 5) + struct.pack("<I", v)),
        st.integers(1, 4).map(lambda d: groups(number, d)),
    )


def st_choice_number(value: int) -> int:
    """bool_value (2) or int_value (3), by the value's parity."""
    return 2 + value % 2


texts = st.one_of(
    st.text(max_size=8).map(str.encode),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xf0\x9f\x98\x80"]),
)
ids16 = st.one_of(st.binary(min_size=16, max_size=16), st.just(bytes(16)), st.binary(max_size=20))
ids8 = st.one_of(st.binary(min_size=8, max_size=8), st.just(bytes(8)), st.binary(max_size=10))
any_values = st.lists(
    st.one_of(
        texts.map(lambda t: delimited(1, t)),
        st.integers(0, 2**64 - 1).map(lambda v: tag(st_choice_number(v), 0) + varint(v)),
        st.integers(0, 2**64 - 1).map(lambda v: fixed64(4, v)),
        st.sampled_from([5, 6, 7]).map(lambda n: delimited(n, b"")),
        _wire_field(1),
        _wire_field(9),
    ),
    max_size=3,
).map(b"".join)


key_values = st.builds(
    lambda key, values, extra: delimited(1, key) + b"".join(delimited(2, v) for v in values) + extra,
    st.one_of(st.sampled_from([b"service.name", b"service.instance.id"]), texts),
    st.lists(any_values, max_size=2),
    st.one_of(st.just(b""), _wire_field(3)),
)
resources = st.one_of(
    st.none(),
    st.lists(
        st.one_of(key_values.map(lambda kv: delimited(1, kv)), _wire_field(2), _wire_field(1)), max_size=4
    ).map(b"".join),
)
events = st.lists(
    st.one_of(
        key_values.map(lambda kv: delimited(3, kv)),
        st.just(delimited(3, b"")),
        _wire_field(2),
        _wire_field(3),
    ),
    max_size=3,
).map(b"".join)
statuses = st.lists(
    st.one_of(
        st.integers(-3, 2**33).map(lambda c: tag(3, 0) + varint(c)),
        texts.map(lambda t: delimited(2, t)),
        _wire_field(3),
    ),
    max_size=3,
).map(b"".join)
span_fields = st.one_of(
    ids16.map(lambda b: delimited(1, b)),
    ids8.map(lambda b: delimited(2, b)),
    ids8.map(lambda b: delimited(4, b)),
    texts.map(lambda t: delimited(5, t)),
    st.one_of(st.integers(-2, 7), st.integers(0, 2**64 - 1)).map(lambda k: tag(6, 0) + varint(k)),
    st.integers(0, 2**64 - 1).map(lambda v: fixed64(7, v)),
    st.integers(0, 2**64 - 1).map(lambda v: fixed64(8, v)),
    key_values.map(lambda kv: delimited(9, kv)),
    st.just(delimited(9, b"")),
    events.map(lambda e: delimited(11, e)),
    statuses.map(lambda s: delimited(15, s)),
    st.sampled_from([1, 2, 4, 5, 6, 7, 8, 9, 11, 15, 16, 13]).flatmap(_wire_field),
)
good_span = st.builds(
    lambda t, s, rest: delimited(1, t) + delimited(2, s) + b"".join(rest),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=8, max_size=8),
    st.lists(span_fields, max_size=6),
)
spans = st.one_of(good_span, st.lists(span_fields, max_size=8).map(b"".join))
scopes = st.builds(
    lambda scope, members, extra: (
        (delimited(1, scope) if scope is not None else b"")
        + b"".join(delimited(2, s) for s in members)
        + extra
    ),
    st.one_of(st.none(), st.sampled_from([b"", b"s1", b"s2"])),
    st.lists(spans, max_size=4),
    st.one_of(st.just(b""), _wire_field(1), _wire_field(3)),
)
built_requests = st.lists(
    st.builds(
        lambda resource, members, extra: (
            (delimited(1, resource) if resource is not None else b"")
            + b"".join(delimited(2, s) for s in members)
            + extra
        ),
        resources,
        st.lists(scopes, max_size=3),
        st.one_of(st.just(b""), _wire_field(1), _wire_field(2), _wire_field(5)),
    ).map(lambda rs: delimited(1, rs)),
    max_size=3,
).map(b"".join)


@FUZZ
@given(built_requests)
def test_requests_built_field_by_field(data: bytes) -> None:
    fields = assert_same(data)
    assert (fields == "refused") == (not upb_accepts(data))
    if isinstance(fields, dict) and fields["size"]:
        assert np.array_equal(walk.walk_python(data).signature, old_signatures_kept(data))


def old_signatures_kept(data: bytes) -> np.ndarray:
    """`old_signatures` of the spans the walkers keep (valid ids)."""
    kept = []
    for resource_spans in LightRequest.FromString(data).resource_spans:
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                t, s = span.trace_id, span.span_id
                kept.append(len(t) == 16 and len(s) == 8 and any(t) and any(s))
    return old_signatures(data)[np.array(kept, dtype=bool)]


@pytest.mark.parametrize("depth", [1, 50, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 5000])
@pytest.mark.parametrize("number", [1, 5, 2**29 - 1])
def test_deep_group_nesting(depth: int, number: int) -> None:
    data = groups(number, depth)
    assert (assert_same(data) == "refused") == (not upb_accepts(data)) == (depth > MAX_DEPTH)


def test_deep_nesting_inside_a_span() -> None:
    for depth in range(MAX_DEPTH - 6, MAX_DEPTH + 1):
        for field in (9, 11, 15, 77):
            data = request(
                resource_spans(
                    None, scope_spans(None, span_bytes(b"\x01" * 16, b"\x02" * 8, groups(field, depth)))
                )
            )
            assert (assert_same(data) == "refused") == (not upb_accepts(data))


# ---- which walker runs -----------------------------------------------------------------------------


def test_walk_is_the_compiled_walker_when_it_is_built() -> None:
    assert (walk.walk_compiled is not None) == walk.COMPILED
    assert walk.walk is (walk.walk_compiled if walk.COMPILED else walk.walk_python)
    assert ("not built" in walk.IMPLEMENTATION) == (not walk.COMPILED)
    assert issubclass(WalkError, ValueError)


def compiler_here() -> bool:
    """Whether this Python's C compiler and headers are installed (then the install builds the walker)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which(compiler) is not None and headers.exists()


@pytest.mark.skipif(
    not compiler_here(), reason="no C compiler or Python headers here: the fallback is expected"
)
def test_the_compiled_walker_is_built_where_a_compiler_is() -> None:
    """The install builds the walker wherever it can: the pure-Python one is not silently in use."""
    assert walk.COMPILED, NOT_BUILT
    assert "Cython" in walk.IMPLEMENTATION


@needs_compiled
def test_the_compiled_walker_takes_any_bytes_like_object() -> None:
    data = SDK_PAYLOADS[0]
    assert (
        outcome(walk.walk_compiled, bytearray(data))
        == outcome(walk.walk_compiled, memoryview(data))
        == outcome(walk.walk_compiled, data)
    )  # type: ignore[arg-type]
