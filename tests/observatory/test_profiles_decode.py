"""Profiles in: OTLP profiles (protobuf and OTLP/JSON), folded stacks and pprof, each bad form refused."""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.profiles.v1development.profiles_pb2 import (
    Function,
    Line,
    Link,
    Location,
    Mapping,
    Profile,
    Sample,
    Stack,
)

from boutique.observatory.profiles import decode, folded, pprof_in, pprof_pb2
from boutique.observatory.profiles.model import ProfileBatch, frame_label
from boutique.observatory.receivers import pyroscope
from boutique.observatory.receivers.otlp_proto import PayloadError
from tests.observatory.profile_builders import Dictionary, Frame, export_request
from tests.observatory.test_decoders_fuzz import spoiled
from tests.observatory.test_walker import mutated

TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))
T0 = 1_700_000_000_000_000_000  # ns
HANDLE: list[Frame] = [("main", "app/run.py", 3), ("Server.handle", "app/server.py", 40)]
PARSE: list[Frame] = [*HANDLE, ("parse", "app/parse.py", 7)]


def sample_request() -> ExportProfilesServiceRequest:
    """A cpu and a wall profile: rows in a span and outside one, on two threads, both value forms."""
    d = Dictionary()
    handle, parse = d.stack(HANDLE), d.stack(PARSE)
    link = d.link(TRACE, SPAN)
    main, worker = d.attribute("thread.name", "MainThread"), d.attribute("thread.name", "worker-1")
    thread_id = d.attribute("thread.id", 7)
    cpu = d.profile(
        "cpu",
        [
            Sample(
                stack_index=parse,
                values=[30_000_000],
                timestamps_unix_nano=[T0 + 3_000, T0 + 1_000, T0 + 2_000],
                attribute_indices=[main, thread_id],
                link_index=link,
            ),
            Sample(stack_index=handle, values=[10_000_000], attribute_indices=[worker]),
        ],
        T0,
    )
    wall = d.profile(
        "wall",
        [
            Sample(
                stack_index=handle,
                values=[10_000_000, 20_000_000],
                timestamps_unix_nano=[T0 + 5_000_000, T0 + 9_000_000],
                attribute_indices=[worker],
            )
        ],
        T0,
    )
    return export_request(d, [cpu, wall], "cart", "cart-1")


def rows(batch: ProfileBatch) -> list[tuple[Any, ...]]:
    """Each row as (time_us, type, unit, value, frames, thread, labels, trace_id, span_id, service, instance)."""
    found = []
    for i in range(len(batch)):
        resource = batch.resources[batch.resource_index[i]]
        found.append(
            (
                batch.time_us[i],
                batch.type[i],
                batch.unit[i],
                batch.value[i],
                batch.stacks[batch.stack_id[i]],
                batch.thread[i],
                json.loads(batch.labels[i]),
                batch.trace_id[i],
                batch.span_id[i],
                resource.service,
                resource.instance,
            )
        )
    return found


def labels_of(frames: Sequence[Frame]) -> tuple[str, ...]:
    return tuple(frame_label(*frame) for frame in frames)


def expected(
    after_us: int, kind: str, value: int, frames: Sequence[Frame], thread: str, labels: dict[str, Any]
) -> tuple[Any, ...]:
    """A row of the sample request outside any span, `after_us` past its start."""
    return (T0 // 1000 + after_us, kind, "nanoseconds", value, labels_of(frames), thread, labels)


EXPECTED = [
    (*expected(1, "cpu", 30_000_000, PARSE, "MainThread", {"thread.id": 7}), TRACE, SPAN, "cart", "cart-1"),
    (*expected(0, "cpu", 10_000_000, HANDLE, "worker-1", {}), b"", b"", "cart", "cart-1"),
    (*expected(5_000, "wall", 10_000_000, HANDLE, "worker-1", {}), b"", b"", "cart", "cart-1"),
    (*expected(9_000, "wall", 20_000_000, HANDLE, "worker-1", {}), b"", b"", "cart", "cart-1"),
]


def otlp_json(request: ExportProfilesServiceRequest) -> dict[str, Any]:
    """The request in OTLP/JSON: the protobuf JSON mapping with hex ids."""
    document = json_format.MessageToDict(request)
    for link in document["dictionary"]["linkTable"]:
        for key in ("traceId", "spanId"):
            if key in link:
                link[key] = base64.b64decode(link[key]).hex()
    return document


def test_a_protobuf_request_gives_rows_root_first_with_types_threads_links_and_times() -> None:
    batch = decode.decode(sample_request().SerializeToString())
    assert rows(batch) == EXPECTED
    assert (batch.rejected, batch.rejection) == (0, "")
    assert len(batch.stacks) == 2 and len(batch.resources) == 1
    assert json.loads(batch.resources[0].attributes)["service.name"] == "cart"


def test_the_json_form_decodes_to_the_same_rows() -> None:
    document = otlp_json(sample_request())
    assert document["dictionary"]["linkTable"][1] == {"traceId": TRACE.hex(), "spanId": SPAN.hex()}
    batch = decode.decode_json(json.dumps(document).encode())
    assert rows(batch) == EXPECTED


def test_inlined_lines_and_bare_addresses_are_frames_too() -> None:
    d = Dictionary()
    outer = Function(name_strindex=d.string("outer"), filename_strindex=d.string("a.py"))
    inner = Function(name_strindex=d.string("inner"), filename_strindex=d.string("a.py"))
    d.table.function_table.extend([outer, inner])
    inlined = Location(lines=[Line(function_index=2, line=9), Line(function_index=1, line=4)])
    d.table.mapping_table.extend([Mapping(), Mapping(filename_strindex=d.string("libc.so.6"))])
    native = Location(mapping_index=1, address=0x1F00)
    d.table.location_table.extend([native, inlined])
    d.table.stack_table.append(Stack(location_indices=[1, 2]))  # leaf first: the native frame is the leaf
    request = export_request(d, [d.profile("cpu", [Sample(stack_index=1, values=[5])], T0)], "cart", "cart-1")
    batch = decode.decode(request.SerializeToString())
    assert list(batch.stacks.values()) == [("outer (a.py:4)", "inner (a.py:9)", "0x1f00 (libc.so.6)")]


def test_a_bad_profile_beside_a_good_one_is_counted_for_the_partial_success() -> None:
    request = sample_request()
    request.resource_profiles[0].scope_profiles[0].profiles[1].samples[0].stack_index = 99
    batch = decode.decode(request.SerializeToString())
    assert [row[1] for row in rows(batch)] == ["cpu", "cpu"]
    assert batch.rejected == 1
    assert batch.rejection == "stack_index 99 is outside the stack table (3)"


def spoil(change: Any) -> bytes:
    """The sample request with every profile spoiled by `change(request, profile)`."""
    request = sample_request()
    for profile in request.resource_profiles[0].scope_profiles[0].profiles:
        change(request, profile)
    return request.SerializeToString()


def deep_stack(request: ExportProfilesServiceRequest, profile: Profile) -> None:
    stack = request.dictionary.stack_table[profile.samples[0].stack_index]
    stack.location_indices.extend([1] * decode.MAX_FRAMES)


def linked_by(trace_id: bytes, span_id: bytes) -> Any:
    """A change making each profile's first sample name a link with these ids."""

    def change(request: ExportProfilesServiceRequest, profile: Profile) -> None:
        request.dictionary.link_table[1].CopyFrom(Link(trace_id=trace_id, span_id=span_id))
        profile.samples[0].link_index = 1

    return change


def negative_value(request: ExportProfilesServiceRequest, profile: Profile) -> None:
    profile.samples[0].values[0] = -5


def no_values(request: ExportProfilesServiceRequest, profile: Profile) -> None:
    profile.samples[0].ClearField("values")
    profile.samples[0].ClearField("timestamps_unix_nano")


BAD_REQUESTS = {
    "truncated": (sample_request().SerializeToString()[:-7], "not an OTLP ExportProfilesServiceRequest"),
    "stack index": (
        spoil(lambda r, p: setattr(p.samples[0], "stack_index", 7)),
        "stack_index 7 is outside the stack table (3)",
    ),
    "location index": (
        spoil(lambda r, p: r.dictionary.stack_table[1].location_indices.append(40)),
        "location index 40 is outside the location table",
    ),
    "function index": (
        spoil(lambda r, p: setattr(r.dictionary.location_table[1].lines[0], "function_index", 50)),
        "function_index 50 is outside the function table",
    ),
    "string index": (
        spoil(lambda r, p: setattr(r.dictionary.function_table[1], "name_strindex", 500)),
        "function name string index 500 is outside the string table",
    ),
    "attribute index": (
        spoil(lambda r, p: p.samples[0].attribute_indices.append(60)),
        "attribute index 60 is outside the attribute table",
    ),
    "link index": (spoil(lambda r, p: setattr(p.samples[0], "link_index", 9)), "link_index 9 is outside"),
    "trace id length": (
        spoil(linked_by(b"\x01" * 8, SPAN)),
        "link trace_id must be 16 bytes and span_id 8 bytes (or both empty): link 1 has 8 and 8",
    ),
    "span id length": (spoil(linked_by(TRACE, b"\x01" * 16)), "link 1 has 16 and 16"),
    "span id alone": (spoil(linked_by(b"", SPAN)), "link 1 has 0 and 8"),
    "negative value": (spoil(negative_value), "a sample value is negative (-5)"),
    "values and timestamps": (
        spoil(lambda r, p: p.samples[0].values.extend([1, 2, 3, 4])),
        "values for",
    ),
    "negative line": (
        spoil(lambda r, p: setattr(r.dictionary.location_table[1].lines[0], "line", -3)),
        "line number -3 is negative",
    ),
    "deep stack": (spoil(deep_stack), f"deeper than {decode.MAX_FRAMES} frames"),
    "no sample type": (
        spoil(lambda r, p: setattr(p.sample_type, "type_strindex", 0)),
        "the profile's sample_type names no type",
    ),
    "empty sample": (spoil(no_values), "a sample has neither values nor timestamps"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_request_that_does_not_hold_together_is_refused_with_its_reason(case: str) -> None:
    data, reason = BAD_REQUESTS[case]
    with pytest.raises(PayloadError) as refused:
        decode.decode(data)
    print(case, "->", refused.value)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value)


def short_id() -> bytes:
    """The sample request in OTLP/JSON, its link's trace id two bytes long."""
    document = otlp_json(sample_request())
    document["dictionary"]["linkTable"][1]["traceId"] = "0102"
    return json.dumps(document).encode()


BAD_JSON = {
    "not json": (b"{", "not valid JSON"),
    "not an object": (b"[]", "the request must be a JSON object"),
    "bad hex id": (
        json.dumps({"dictionary": {"linkTable": [{}, {"traceId": "zz", "spanId": "00" * 8}]}}).encode(),
        "dictionary.linkTable[1].traceId is not hex",
    ),
    "bad shape": (
        json.dumps({"resourceProfiles": {"x": 1}}).encode(),
        "resourceProfiles must be a JSON array",
    ),
}


@pytest.mark.parametrize("case", BAD_JSON)
def test_a_bad_json_request_is_refused_with_its_reason(case: str) -> None:
    data, reason = BAD_JSON[case]
    with pytest.raises(PayloadError, match=re.escape(reason)):
        decode.decode_json(data)


def test_a_json_link_of_the_wrong_size_refuses_the_profile_using_it() -> None:
    batch = decode.decode_json(short_id())
    assert [row[1] for row in rows(batch)] == ["wall", "wall"]
    assert (batch.rejected, batch.rejection) == (1, f"{decode.BAD_IDS}: link 1 has 2 and 8")


# ---- folded -------------------------------------------------------------------------------------

FOLDED = b"main (app/run.py:3);handle (app/server.py:40) 12\nmain (app/run.py:3) 3\r\n\nmain (app/run.py:3);handle (app/server.py:40) 4\n"


def test_folded_stacks_are_summed_per_stack_and_keep_spaces_inside_frames() -> None:
    assert folded.parse_folded(FOLDED) == {
        ("main (app/run.py:3)", "handle (app/server.py:40)"): 16,
        ("main (app/run.py:3)",): 3,
    }
    text = folded.to_folded(folded.parse_folded(FOLDED))
    assert text == "main (app/run.py:3) 3\nmain (app/run.py:3);handle (app/server.py:40) 16\n"
    assert folded.parse_folded(text.encode()) == folded.parse_folded(FOLDED)


def test_the_lines_format_counts_one_sample_a_line() -> None:
    assert folded.parse_lines(b"a;b;c\na;b\na;b;c\n") == {("a", "b", "c"): 2, ("a", "b"): 1}


BAD_FOLDED = {
    "no count": (b"a;b 1\na;b;c\n", "folded line 2: no sample count after the stack: 'a;b;c'"),
    "negative count": (b"a;b -4\n", "folded line 1: the sample count -4 is negative"),
    "not a number": (b"a;b 1.5\n", "folded line 1: the sample count '1.5' is not a whole number"),
    "empty frame": (b"a;;b 2\n", "folded line 1: the stack has an empty frame"),
    "no stack": (b" 2\n", "folded line 1: no sample count after the stack"),
    "not utf-8": (b"a;\xff 2\n", "the folded body is not UTF-8 text"),
    "deep": (b";".join([b"f"] * 1025) + b" 1\n", "folded line 1: the stack is deeper than 1024 frames"),
    "huge": (b"a " + str(2**63).encode() + b"\n", "is too large"),
}


@pytest.mark.parametrize("case", BAD_FOLDED)
def test_bad_folded_text_is_refused_naming_its_line(case: str) -> None:
    data, reason = BAD_FOLDED[case]
    with pytest.raises(PayloadError) as refused:
        folded.parse_folded(data)
    assert reason in str(refused.value)


# ---- pprof --------------------------------------------------------------------------------------


class Pprof:
    """A pprof Profile being built (sample types cpu/nanoseconds and samples/count, as Go writes)."""

    def __init__(self) -> None:
        self.profile = pprof_pb2.Profile(string_table=[""])
        self.profile.sample_type.add(type=self.string("samples"), unit=self.string("count"))
        self.profile.sample_type.add(type=self.string("cpu"), unit=self.string("nanoseconds"))
        self.profile.period_type.CopyFrom(
            pprof_pb2.ValueType(type=self.string("cpu"), unit=self.string("nanoseconds"))
        )
        self.profile.period = 10_000_000
        self.profile.time_nanos = T0

    def string(self, text: str) -> int:
        if text not in self.profile.string_table:
            self.profile.string_table.append(text)
        return list(self.profile.string_table).index(text)

    def sample(self, frames: Sequence[Frame], count: int, **labels: str | int) -> None:
        ids = []
        for name, file, line in reversed(frames):
            function = self.profile.function.add(id=len(self.profile.function) + 1)
            function.name, function.filename = self.string(name), self.string(file)
            location = self.profile.location.add(id=len(self.profile.location) + 1)
            location.line.add(function_id=function.id, line=line)
            ids.append(location.id)
        sample = self.profile.sample.add(location_id=ids, value=[count, count * 10_000_000])
        for key, value in labels.items():
            if isinstance(value, str):
                sample.label.add(key=self.string(key), str=self.string(value))
            else:
                sample.label.add(key=self.string(key), num=value)

    def bytes(self) -> bytes:
        return self.profile.SerializeToString()


def a_pprof() -> Pprof:
    built = Pprof()
    built.sample(PARSE, 3, thread_name="MainThread", thread_id=7)
    built.sample(HANDLE, 2)
    return built


@pytest.mark.parametrize("zipped", [False, True], ids=["plain", "gzipped"])
def test_pprof_takes_the_cpu_sample_type_in_nanoseconds_and_the_thread_label(zipped: bool) -> None:
    data = a_pprof().bytes()
    found = pprof_in.parse_pprof(gzip.compress(data) if zipped else data, 1 << 20)
    assert (found.type, found.unit, found.time_ns) == ("cpu", "nanoseconds", T0)
    assert [(s.frames, s.value, s.thread, s.labels) for s in found.samples] == [
        (labels_of(PARSE), 30_000_000, "MainThread", {"thread_id": 7}),
        (labels_of(HANDLE), 20_000_000, "", {}),
    ]


def test_pprof_counts_of_samples_become_nanoseconds_by_the_period_or_the_sample_rate() -> None:
    built = a_pprof()
    by_period = pprof_in.parse_pprof(built.bytes(), 1 << 20, want="samples")
    assert (by_period.type, by_period.unit) == ("samples", "nanoseconds")
    assert [s.value for s in by_period.samples] == [30_000_000, 20_000_000]
    built.profile.ClearField("period_type")
    by_rate = pprof_in.parse_pprof(built.bytes(), 1 << 20, want="samples", ns_per_sample=1_000_000)
    assert [s.value for s in by_rate.samples] == [3_000_000, 2_000_000]


def spoiled_pprof(change: Any) -> bytes:
    built = a_pprof()
    change(built.profile)
    return built.bytes()


def negative_pprof_value(profile: pprof_pb2.Profile) -> None:
    profile.sample[0].value[1] = -10


BAD_PPROF = {
    "not a profile": (b"\xff\xff\xff", "not a pprof profile"),
    "truncated gzip": (gzip.compress(a_pprof().bytes())[:-10], "the gzipped profile is truncated"),
    "location": (spoiled_pprof(lambda p: p.sample[0].location_id.append(77)), "names location 77"),
    "function": (
        spoiled_pprof(lambda p: setattr(p.location[0].line[0], "function_id", 88)),
        "names function 88",
    ),
    "string": (spoiled_pprof(lambda p: setattr(p.function[0], "name", 99)), "string index 99 is outside"),
    "negative": (spoiled_pprof(negative_pprof_value), "value is negative (-10)"),
    "value count": (spoiled_pprof(lambda p: p.sample[0].value.append(1)), "has 3 values for 2 sample types"),
    "no types": (spoiled_pprof(lambda p: p.ClearField("sample_type")), "has no sample type"),
    "line": (
        spoiled_pprof(lambda p: setattr(p.location[0].line[0], "line", -1)),
        "negative line number (-1)",
    ),
}


@pytest.mark.parametrize("case", BAD_PPROF)
def test_a_bad_pprof_is_refused_with_its_reason(case: str) -> None:
    data, reason = BAD_PPROF[case]
    with pytest.raises(PayloadError) as refused:
        pprof_in.parse_pprof(data, 1 << 20)
    assert reason in str(refused.value)


def test_an_inflated_pprof_past_the_limit_is_refused() -> None:
    with pytest.raises(PayloadError, match="larger than 1000 bytes"):
        pprof_in.parse_pprof(gzip.compress(bytes(5000)), 1000)


# ---- Pyroscope /ingest parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("app.cpu", ("app", "cpu", {})),
        ("app", ("app", "", {})),
        ("burner.app", ("burner.app", "", {})),  # what pyroscope-io 0.8 sends: no type suffix
        ("shop.cart.wall{env=prod, region = eu}", ("shop.cart", "wall", {"env": "prod", "region": "eu"})),
        ("app.cpu{service_name=cart,k=v,}", ("cart", "cpu", {"k": "v"})),
        ("app.alloc_space{}", ("app", "alloc_space", {})),
    ],
)
def test_an_application_name_gives_service_type_and_labels(name: str, expected: tuple[Any, ...]) -> None:
    assert pyroscope.parse_name(name) == expected


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1700000000", T0), ("1700000000000", T0), ("1700000000000000", T0), (str(T0), T0), ("5", 5 * 10**9)],
)
def test_times_are_seconds_to_nanoseconds_by_magnitude(text: str, ns: int) -> None:
    assert pyroscope.unix_ns(text, "from") == ns


BAD_PARAMS = {
    "no name": ({}, "name must be an application name"),
    "bad braces": ({"name": "app.cpu{a=b"}, "name must be an application name"),
    "bad label": ({"name": "app{a}"}, "name label 'a' is not key=value"),
    "format": (
        {"name": "app", "format": "trie"},
        "format 'trie' is not supported (use folded, lines, pprof)",
    ),
    "sample rate": ({"name": "app", "sampleRate": "0"}, "sampleRate must be a whole number"),
    "from": ({"name": "app", "from": "yesterday"}, "from must be a Unix time in s, ms, µs or ns"),
    "until": ({"name": "app", "from": "200", "until": "100"}, "until is before from"),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_bad_ingest_parameters_are_refused_with_their_reason(case: str) -> None:
    query, reason = BAD_PARAMS[case]
    with pytest.raises(PayloadError) as refused:
        pyroscope.decode_ingest(query, "", 1 << 20, b"a;b 1\n")
    assert reason in str(refused.value)


def test_ingest_turns_counts_into_nanoseconds_at_the_sample_rate_and_labels_every_row() -> None:
    query = {"name": "app.cpu{env=prod}", "from": "1700000000", "sampleRate": "50", "spyName": "pyspy"}
    batch = pyroscope.decode_ingest(query, "text/plain", 1 << 20, b"a;b 2\na 1\na;b 3\n")
    assert [r[:7] for r in rows(batch)] == [
        (T0 // 1000, "cpu", "nanoseconds", 100_000_000, ("a", "b"), "", {"env": "prod", "spyName": "pyspy"}),
        (T0 // 1000, "cpu", "nanoseconds", 20_000_000, ("a",), "", {"env": "prod", "spyName": "pyspy"}),
    ]
    assert batch.resources[0].service == "app"


def test_ingest_takes_a_pprof_as_a_multipart_profile_field() -> None:
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="profile"; filename="profile.pprof"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + gzip.compress(a_pprof().bytes())
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    batch = pyroscope.decode_ingest({"name": "app", "format": "pprof"}, content_type, 1 << 20, body)
    assert [(r[3], r[4], r[5]) for r in rows(batch)] == [
        (30_000_000, labels_of(PARSE), "MainThread"),
        (20_000_000, labels_of(HANDLE), ""),
    ]
    with pytest.raises(PayloadError, match="has no field named profile"):
        pyroscope.decode_ingest(
            {"name": "app", "format": "pprof"}, content_type, 1 << 20, body.replace(b'"profile"', b'"other"')
        )


# ---- arbitrary input: a consistent batch or a PayloadError, nothing else -------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def consistent(decoder: Callable[[bytes], ProfileBatch], data: bytes) -> None:
    """Decode; a batch's columns must line up and name its stacks and resources."""
    try:
        batch = decoder(data)
    except PayloadError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    size = len(batch)
    for column in ("type", "unit", "value", "stack_id", "thread", "labels", "trace_id", "span_id"):
        assert len(getattr(batch, column)) == size, column
    assert len(batch.resource_index) == size
    assert all(0 <= i < len(batch.resources) for i in batch.resource_index)
    assert all(key in batch.stacks for key in batch.stack_id)
    assert all(0 <= value < 2**63 for value in batch.value)
    assert all(
        len(t) in (0, 16) and len(s) in (0, 8) for t, s in zip(batch.trace_id, batch.span_id, strict=True)
    )
    assert all(isinstance(json.loads(text), dict) for text in batch.labels)
    assert all(len(frames) <= decode.MAX_FRAMES for frames in batch.stacks.values())


@FUZZ
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_to_every_profile_decoder(data: bytes) -> None:
    consistent(decode.decode, data)
    consistent(decode.decode_json, data)
    consistent(lambda body: pyroscope.decode_push(1 << 20, body), data)
    for form in pyroscope.FORMATS:
        consistent(partial(pyroscope.decode_ingest, {"name": "app", "format": form}, "", 1 << 20), data)


@FUZZ
@given(st.data())
def test_mutated_profile_requests(data: st.DataObject) -> None:
    consistent(decode.decode, mutated(data, sample_request().SerializeToString()))
    pprof = mutated(data, a_pprof().bytes())
    consistent(
        lambda body: pyroscope.decode_ingest({"name": "app", "format": "pprof"}, "", 1 << 20, body), pprof
    )


@FUZZ
@given(st.data())
def test_spoiled_json_profile_requests(data: st.DataObject) -> None:
    consistent(decode.decode_json, json.dumps(spoiled(data, otlp_json(sample_request()))).encode())
