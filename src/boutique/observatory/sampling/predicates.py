"""Tests of single spans that policies need, evaluated once per incoming batch, in columns.

`StatusIn` reads the status column. `AttributeTest` reads a span or resource attribute: resources are
few per batch and each is decoded once (cached). For span attributes, the spans worth looking at are
found without decoding: by their tag signatures (`tagsig`, computed at ingest) when the wanted values
are known exactly, else by searching the batch's bodies, as one buffer, for the key's bytes. In such a
span the key is read where an OTLP serializer writes a top-level attribute (`Span.attributes` tag and
length, then the `KeyValue` with its key first) and only that value is decoded; a span where the key
occurs in any other shape (an event's attribute, fields in another order) is decoded whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from boutique.observatory import tagsig
from boutique.observatory.decode import resource_attributes
from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.values import from_any, to_any

_ATTRIBUTE_TAG = 0x4A  # Span.attributes: field 9, length-delimited
_VALUE_TAG = 0x12  # KeyValue.value: field 2, length-delimited
_STRING_TAG = 0x0A  # AnyValue.string_value: field 1, length-delimited


class SpanPredicate(Protocol):
    """A test of single spans whose result a trace keeps as one bit: did any of its spans pass."""

    def spans(self, batch: SpanBatch) -> np.ndarray:
        """Whether each span of the batch passes (bool, one per span)."""
        ...


@dataclass(frozen=True)
class StatusIn:
    """A span whose status code is one of `codes`."""

    codes: frozenset[int]

    def spans(self, batch: SpanBatch) -> np.ndarray:
        """The status column against the codes: nothing is decoded."""
        return np.isin(batch.status, np.fromiter(self.codes, dtype=np.uint8))


def varint(value: int) -> bytes:
    """The protobuf varint encoding of a non-negative integer."""
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _read_varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    """(value, bytes used) of the varint at `position`; (-1, 0) when it does not end before `end`."""
    value = shift = 0
    start = position
    while position < end and shift < 64:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position - start
        shift += 7
    return -1, 0


def occurrences(body: bytes, needle: bytes, start: int = 0, end: int | None = None) -> list[int]:
    """Positions of `needle` in `body[start:end]`."""
    positions = []
    found = body.find(needle, start, end)
    while found >= 0:
        positions.append(found)
        found = body.find(needle, found + len(needle), end)
    return positions


class AttributeTest:
    """A span (or its resource) holding attribute `key` with a value `test` accepts (see module docstring).

    `values`, when given, are all the values `test` accepts (exact strings or booleans): their tag
    signatures then pick the spans to look at.
    """

    def __init__(self, key: str, test: Callable[[Any], bool], values: Sequence[Any] | None = None) -> None:
        self.key = key
        self.test = test
        encoded = key.encode()
        self.needle = b"\x0a" + varint(len(encoded)) + encoded  # KeyValue.key: field 1, length-delimited
        self.masks = None
        if values is not None:
            pairs = [KeyValue(key=key, value=to_any(v)).SerializeToString() for v in values]
            self.masks = np.array([tagsig.of([pair]) for pair in pairs], dtype=np.uint64)

    def _resource(self, data: bytes) -> bool:
        values = resource_attributes(data)
        return self.key in values and self.test(values[self.key])

    def _decoded(self, body: bytes) -> bool:
        """The exact answer: the span decoded whole."""
        try:
            span = OtlpSpan.FromString(body)
        except DecodeError:
            return False
        return any(pair.key == self.key and self.test(from_any(pair.value)) for pair in span.attributes)

    def _at(self, body: bytes, position: int, start: int, end: int) -> bool | None:
        """The test on a top-level attribute whose KeyValue starts at `position`; None if it is not one."""
        for width in (1, 2, 3):
            tag = position - 1 - width
            if tag < start:
                return None
            if body[tag] != _ATTRIBUTE_TAG:
                continue
            length, used = _read_varint(body, tag + 1, position)
            if used != width or position + length > end:
                continue
            pair_end = position + length
            value_at = position + len(self.needle)
            if value_at == pair_end:
                return self.test(None)
            if value_at > pair_end or body[value_at] != _VALUE_TAG:
                return None
            size, used = _read_varint(body, value_at + 1, pair_end)
            any_at = value_at + 1 + used
            if used == 0 or any_at + size != pair_end:
                return None
            if size and body[any_at] == _STRING_TAG:  # the common case, read without a message
                length, used = _read_varint(body, any_at + 1, pair_end)
                if used and any_at + 1 + used + length == pair_end:
                    try:
                        return self.test(body[any_at + 1 + used : pair_end].decode())
                    except UnicodeDecodeError:
                        return None
            try:
                value = AnyValue.FromString(body[any_at:pair_end])
            except DecodeError:
                return None
            return self.test(from_any(value))
        return None

    def _places(self, batch: SpanBatch) -> tuple[list[int], list[int]]:
        """Where the key's bytes lie in the spans that could match, and in which span each lies."""
        body, offsets = batch.body, batch.body_offsets
        if self.masks is None:
            positions = occurrences(body, self.needle)
            if not positions:
                return [], []
            return positions, (np.searchsorted(offsets, positions, side="right") - 1).tolist()
        signature = batch.signature
        possible = np.zeros(batch.size, dtype=bool)
        for mask in self.masks:
            possible |= ((signature & mask) == mask).all(axis=1)
        positions, spans = [], []
        for index in np.flatnonzero(possible).tolist():
            found = occurrences(body, self.needle, int(offsets[index]), int(offsets[index + 1]))
            positions += found
            spans += [index] * len(found)
        return positions, spans

    def spans(self, batch: SpanBatch) -> np.ndarray:
        """Whether each span (or its resource) holds a matching attribute."""
        by_resource = np.fromiter(
            (self._resource(r) for r in batch.resources), dtype=bool, count=len(batch.resources)
        )
        out = by_resource[batch.resource_index] if len(by_resource) else np.zeros(batch.size, dtype=bool)
        body, offsets = batch.body, batch.body_offsets
        unsure: set[int] = set()
        for position, index in zip(*self._places(batch), strict=True):
            if out[index]:
                continue
            answer = self._at(body, position, int(offsets[index]), int(offsets[index + 1]))
            if answer is None:
                unsure.add(index)
            elif answer:
                out[index] = True
        for index in unsure:
            if not out[index]:
                out[index] = self._decoded(body[offsets[index] : offsets[index + 1]])
        return out
