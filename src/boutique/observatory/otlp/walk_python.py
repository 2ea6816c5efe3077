"""The span walker in pure Python (installs anywhere): upb parses, comprehensions and NumPy build columns.

upb parses the payload for the schema of `walk_rules` (that parse decides validity) and each span's
ids, name, kind and times are read from its objects; a second parse with spans as bytes gives each
span's body as it arrived. The kept spans' bodies, joined behind separators and parsed as one
message, give every attribute, event and status in one list each, split back into spans at the
separators (span by span when that would be ambiguous). Each distinct resource is parsed once more
for its identity and attributes. Tag signatures are CRC-32 by zlib, OR-ed in NumPy.
"""

from __future__ import annotations

import operator
import zlib
from itertools import chain, compress
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from boutique.observatory import tagsig
from boutique.observatory.model import ROOT_PARENT, SpanBatch
from boutique.observatory.otlp.walk_rules import BAD_IDS, MALFORMED, UNKNOWN_SERVICE, WalkError

_T = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "boutique.observatory.walk"
_ONE, _MANY = _T.LABEL_OPTIONAL, _T.LABEL_REPEATED
_BYTES, _STRING, _MESSAGE = _T.TYPE_BYTES, _T.TYPE_STRING, _T.TYPE_MESSAGE
_ZERO_TRACE = bytes(16)

# (name, [(field, number, type, label, message type)], oneof over every field)
_SCHEMA: list[tuple[str, list[tuple[str, int, int, int, str]], bool]] = [
    ("Request", [("resource_spans", 1, _MESSAGE, _MANY, "ResourceSpans")], False),
    (
        "ResourceSpans",
        [("resource", 1, _BYTES, _ONE, ""), ("scope_spans", 2, _MESSAGE, _MANY, "ScopeSpans")],
        False,
    ),
    ("ScopeSpans", [("scope", 1, _BYTES, _ONE, ""), ("spans", 2, _MESSAGE, _MANY, "Span")], False),
    (
        "Span",
        [
            ("trace_id", 1, _BYTES, _ONE, ""),
            ("span_id", 2, _BYTES, _ONE, ""),
            ("parent_span_id", 4, _BYTES, _ONE, ""),
            ("name", 5, _STRING, _ONE, ""),
            ("kind", 6, _T.TYPE_INT32, _ONE, ""),
            ("start_time_unix_nano", 7, _T.TYPE_FIXED64, _ONE, ""),
            ("end_time_unix_nano", 8, _T.TYPE_FIXED64, _ONE, ""),
            ("attributes", 9, _BYTES, _MANY, ""),
            ("events", 11, _MESSAGE, _MANY, "Event"),
            ("status", 15, _MESSAGE, _ONE, "Status"),
        ],
        False,
    ),
    ("Event", [("attributes", 3, _BYTES, _MANY, "")], False),
    ("Status", [("message", 2, _STRING, _ONE, ""), ("code", 3, _T.TYPE_INT32, _ONE, "")], False),
    # The same request with each span's bytes unparsed: the bodies, as they arrived.
    ("Bodies", [("resource_spans", 1, _MESSAGE, _MANY, "BodiesResource")], False),
    ("BodiesResource", [("scope_spans", 2, _MESSAGE, _MANY, "BodiesScope")], False),
    ("BodiesScope", [("spans", 2, _BYTES, _MANY, "")], False),
    # Spans' bytes joined (see `_extras`): their attributes, events and statuses in one list each.
    (
        "Flat",
        [
            ("attributes", 9, _BYTES, _MANY, ""),
            ("events", 11, _BYTES, _MANY, ""),
            ("status", 15, _BYTES, _MANY, ""),
        ],
        False,
    ),
    ("StatusCodes", [("code", 3, _T.TYPE_INT32, _MANY, "")], False),
    ("StatusCodeBytes", [("code", 3, _BYTES, _MANY, "")], False),
    # A resource: its attributes as bytes (for the signature) and as key/string value (its identity).
    ("ResourceAttributes", [("attributes", 1, _BYTES, _MANY, "")], False),
    ("Resource", [("attributes", 1, _MESSAGE, _MANY, "KeyValue")], False),
    ("KeyValue", [("key", 1, _STRING, _ONE, ""), ("value", 2, _MESSAGE, _ONE, "AnyValue")], False),
    (
        "AnyValue",
        [
            ("string_value", 1, _STRING, _ONE, ""),
            ("bool_value", 2, _T.TYPE_BOOL, _ONE, ""),
            ("int_value", 3, _T.TYPE_INT64, _ONE, ""),
            ("double_value", 4, _T.TYPE_DOUBLE, _ONE, ""),
            ("array_value", 5, _BYTES, _ONE, ""),
            ("kvlist_value", 6, _BYTES, _ONE, ""),
            ("bytes_value", 7, _BYTES, _ONE, ""),
        ],
        True,
    ),
]


def _classes() -> dict[str, Any]:
    """The schema's message classes, built from descriptors in a pool of their own."""
    file = descriptor_pb2.FileDescriptorProto(name="boutique_walk.proto", package=_PACKAGE, syntax="proto3")
    for name, fields, oneof in _SCHEMA:
        message = file.message_type.add(name=name)
        if oneof:
            message.oneof_decl.add(name="value")
        for field_name, number, kind, label, type_name in fields:
            added = message.field.add(name=field_name, number=number, type=kind, label=label)  # type: ignore[arg-type]
            if type_name:
                added.type_name = f".{_PACKAGE}.{type_name}"
            if oneof:
                added.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name, _, _ in _SCHEMA
    }


CLASSES = _classes()  # by message name; `Request` and `Resource` define what is valid (see walk_rules)
_Request, _Bodies, _Event = CLASSES["Request"], CLASSES["Bodies"], CLASSES["Event"]
_Resource, _ResourceAttributes = CLASSES["Resource"], CLASSES["ResourceAttributes"]
_Flat, _StatusCodes, _StatusCodeBytes = CLASSES["Flat"], CLASSES["StatusCodes"], CLASSES["StatusCodeBytes"]
_SINGULAR = operator.attrgetter(
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_unix_nano", "end_time_unix_nano"
)


def _identity(resource: bytes) -> tuple[str, str, np.ndarray]:
    """service.name, service.instance.id and the attributes' signature of a serialized Resource."""
    service, instance = UNKNOWN_SERVICE, ""
    for kv in _Resource.FromString(resource).attributes:
        if kv.key == "service.name" and kv.value.string_value:
            service = kv.value.string_value
        elif kv.key == "service.instance.id":
            instance = kv.value.string_value
    return service, instance, tagsig.of(list(_ResourceAttributes.FromString(resource).attributes))


def _offsets(lengths: list[int]) -> np.ndarray:
    """int64 offsets (len + 1) of concatenated pieces of these lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def walk_python(data: bytes) -> SpanBatch:
    """The spans of a serialized ExportTraceServiceRequest as columns; `WalkError` if it is not one."""
    try:
        request = _Request.FromString(data)
        return _walk(request, data)
    except DecodeError:
        raise WalkError(MALFORMED) from None


def _walk(request: Any, data: bytes) -> SpanBatch:
    """The batch of a parsed (so valid) request: spans kept in order, resources and scopes by first use."""
    batch = SpanBatch()
    spans: list[Any] = []  # kept spans (upb objects), in order
    rows: list[tuple[Any, ...]] = []  # their `_SINGULAR` fields
    bodies: list[bytes] = []
    resource_index: list[int] = []
    scope_index: list[int] = []
    identities: dict[bytes, tuple[str, str, np.ndarray]] = {}
    resources: dict[bytes, int] = {}
    scopes: dict[bytes, int] = {}
    resource_signatures: list[np.ndarray] = []
    body_request = None
    for number, resource_spans in enumerate(request.resource_spans):
        resource = resource_spans.resource
        if resource not in identities:  # every resource is parsed, used or not
            identities[resource] = _identity(resource)
        first = len(spans)
        for place, scope_spans in enumerate(resource_spans.scope_spans):
            scope_list = scope_spans.spans[:]
            if not scope_list:
                continue
            if body_request is None:
                body_request = _Bodies.FromString(data)
            scope_bodies = body_request.resource_spans[number].scope_spans[place].spans[:]
            scope_rows = list(map(_SINGULAR, scope_list))
            kept = [
                len(row[0]) == 16 and len(row[1]) == 8 and row[0] != _ZERO_TRACE and row[1] != ROOT_PARENT
                for row in scope_rows
            ]
            if not all(kept):
                batch.reject(len(kept) - sum(kept), BAD_IDS)
                scope_list = list(compress(scope_list, kept))
                scope_rows = list(compress(scope_rows, kept))
                scope_bodies = list(compress(scope_bodies, kept))
                if not scope_list:
                    continue
            spans += scope_list
            rows += scope_rows
            bodies += scope_bodies
            scope_index += [scopes.setdefault(scope_spans.scope, len(scopes))] * len(scope_list)
        if len(spans) > first:
            if resource not in resources:
                resources[resource] = len(resources)
                service, instance, signature = identities[resource]
                batch.services.append(service)
                batch.instances.append(instance)
                resource_signatures.append(signature)
            resource_index += [resources[resource]] * (len(spans) - first)
    batch.resources = list(resources)
    batch.scopes = list(scopes)
    if spans:
        _columns(batch, rows, bodies)
        batch.resource_index = np.array(resource_index, dtype=np.int32)
        batch.scope_index = np.array(scope_index, dtype=np.int32)
        signature, codes = _extras(spans, bodies)
        batch.signature = signature | np.stack(resource_signatures)[batch.resource_index]
        batch.status = np.where((codes >= 0) & (codes <= 2), codes, 0).astype(np.uint8)
    return batch


def _columns(batch: SpanBatch, rows: list[tuple[Any, ...]], bodies: list[bytes]) -> None:
    """Fill the batch's id, name, kind, time and body columns from the kept spans' fields and bytes."""
    trace_ids, span_ids, parents, names, kinds, starts, ends = zip(*rows, strict=True)
    batch.size = len(rows)
    batch.trace_id = b"".join(trace_ids)
    batch.span_id = b"".join(span_ids)
    batch.parent_id = b"".join([p if len(p) == 8 else ROOT_PARENT for p in parents])
    operation = "".join(names)
    if operation.isascii():
        batch.operation = operation.encode()
        batch.operation_offsets = _offsets(list(map(len, names)))
    else:
        encoded = [n.encode() for n in names]
        batch.operation = b"".join(encoded)
        batch.operation_offsets = _offsets(list(map(len, encoded)))
    batch.body = b"".join(bodies)
    batch.body_offsets = _offsets(list(map(len, bodies)))
    kind = np.array(kinds, dtype=np.int64)
    batch.kind = np.where((kind >= 0) & (kind <= 5), kind, 0).astype(np.uint8)
    begin = np.array(starts, dtype=np.uint64)
    end = np.array(ends, dtype=np.uint64)
    batch.start_us = (begin // np.uint64(1000)).astype(np.int64)
    later = end > begin
    took = (end - np.where(later, begin, end)) // np.uint64(1000)
    batch.duration_us = took.astype(np.int64)


# A separator put before each span's bytes when they are parsed as one message: an empty attribute,
# an event holding one empty attribute and a status with code 0 mark where each span begins.
_SEPARATOR = b"\x4a\x00\x5a\x02\x1a\x00\x7a\x02\x18\x00"


def _extras(spans: list[Any], bodies: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(signatures of span and event attributes, status codes as int64) of the kept spans.

    The spans' bytes are parsed as one message, so each column comes out of upb in one list, split
    back into spans at the separators. That is exact when the separators are the only empty
    attributes (CRC 0) and status codes 0 there; otherwise (almost never) each span is read alone.
    """
    size = len(bodies)
    try:
        flat = _Flat.FromString(_SEPARATOR + _SEPARATOR.join(bodies))
        joined_status = b"".join(flat.status)
        if not _StatusCodeBytes.FromString(joined_status).code:
            codes = np.array(_StatusCodes.FromString(joined_status).code, dtype=np.int64)
            starts = np.flatnonzero(codes == 0)
            events = _Event.FromString(b"".join(flat.events)).attributes
            bits = np.zeros((size, 256), dtype=bool)  # the signature bits each span has
            if len(starts) == size and _mark(bits, flat.attributes[:]) and _mark(bits, events[:]):
                signature = np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)
                return signature, codes[np.append(starts[1:], len(codes)) - 1]
    except DecodeError:  # not expected (the request parsed); reading span by span is exact anyway
        pass
    return _extras_one_by_one(spans)


def _mark(bits: np.ndarray, key_values: list[bytes]) -> bool:
    """Set the signature bits of key values where an empty one opens each span; False if unclear."""
    hashes = np.fromiter(map(zlib.crc32, key_values), dtype=np.uint32, count=len(key_values))
    separators = hashes == 0  # the empty openers, unless a real attribute hashes to 0 as well
    if np.count_nonzero(separators) != len(bits):
        return False
    owners = np.cumsum(separators)[~separators] - 1
    hashes = hashes[~separators]
    for shift in (0, 8, 16, 24):  # bit i of the 256 is bit i % 64 of word i // 64, as in `tagsig`
        bits[owners, (hashes >> np.uint32(shift)) & np.uint32(0xFF)] = True
    return True


def _extras_one_by_one(spans: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """`_extras` span by span."""
    attributes = [s.attributes for s in spans]
    signature = tagsig.signatures(list(chain.from_iterable(attributes)), [len(a) for a in attributes])
    with_events = [(i, s.events) for i, s in enumerate(spans) if len(s.events)]
    if with_events:
        pairs = [e.attributes for _, events in with_events for e in events]
        counts = [sum(len(e.attributes) for e in events) for _, events in with_events]
        signature[[i for i, _ in with_events]] |= tagsig.signatures(list(chain.from_iterable(pairs)), counts)
    return signature, np.array([s.status.code for s in spans], dtype=np.int64)
