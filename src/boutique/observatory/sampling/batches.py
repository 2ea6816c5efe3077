"""Span batches in columns for the sampler: grouped by trace, cut to some spans, and written as bytes and back.

Everything works on the batch's buffers with numpy: no Python object per span.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from boutique.observatory import tagsig
from boutique.observatory.model import SpanBatch


@dataclass(slots=True)
class Groups:
    """A batch's spans grouped by trace: per group its id and aggregates, per span its group."""

    ids: list[bytes]  # each group's 16-byte trace id
    span_group: np.ndarray  # int64 per span: the index of its group
    spans: np.ndarray  # int64 per group
    min_start_us: np.ndarray  # int64 per group
    max_end_us: np.ndarray  # int64 per group
    flags: np.ndarray  # uint64 per group: the OR of its spans' predicate bits


def group_by_trace(batch: SpanBatch, span_flags: np.ndarray) -> Groups:
    """The batch's traces (sorted by id) with each one's span count, time span and predicate bits."""
    n = batch.size
    words = np.frombuffer(batch.trace_id, dtype=np.uint64).reshape(n, 2)
    order = np.lexsort((words[:, 1], words[:, 0]))
    ordered = words[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=first[1:])
    starts = np.flatnonzero(first)
    span_group = np.empty(n, dtype=np.int64)
    span_group[order] = np.cumsum(first) - 1
    start = batch.start_us[order]
    trace_id = batch.trace_id
    return Groups(
        ids=[trace_id[16 * i : 16 * i + 16] for i in order[starts].tolist()],
        span_group=span_group,
        spans=np.diff(np.append(starts, n)),
        min_start_us=np.minimum.reduceat(start, starts),
        max_end_us=np.maximum.reduceat(start + batch.duration_us[order], starts),
        flags=np.bitwise_or.reduceat(span_flags[order], starts),
    )


def _fixed(buffer: bytes, width: int, index: np.ndarray) -> bytes:
    return np.frombuffer(buffer, dtype=np.uint8).reshape(-1, width)[index].tobytes()


def _varying(
    buffer: bytes, offsets: np.ndarray, mask: np.ndarray, index: np.ndarray
) -> tuple[bytes, np.ndarray]:
    lengths = np.diff(offsets)
    kept = np.frombuffer(buffer, dtype=np.uint8)[np.repeat(mask, lengths)].tobytes()
    return kept, np.concatenate(([0], np.cumsum(lengths[index]))).astype(np.int64)


def take(batch: SpanBatch, mask: np.ndarray) -> SpanBatch:
    """A batch of the spans where `mask` is true (resources and scopes kept whole: the store interns them)."""
    index = np.flatnonzero(mask)
    if len(index) == batch.size:
        return batch
    operation, operation_offsets = _varying(batch.operation, batch.operation_offsets, mask, index)
    body, body_offsets = _varying(batch.body, batch.body_offsets, mask, index)
    return SpanBatch(
        size=len(index),
        trace_id=_fixed(batch.trace_id, 16, index),
        span_id=_fixed(batch.span_id, 8, index),
        parent_id=_fixed(batch.parent_id, 8, index),
        kind=batch.kind[index],
        status=batch.status[index],
        start_us=batch.start_us[index],
        duration_us=batch.duration_us[index],
        operation=operation,
        operation_offsets=operation_offsets,
        body=body,
        body_offsets=body_offsets,
        resource_index=batch.resource_index[index],
        scope_index=batch.scope_index[index],
        resources=batch.resources,
        services=batch.services,
        instances=batch.instances,
        scopes=batch.scopes,
        signature=batch.signature[index],
    )


# ---- bytes ------------------------------------------------------------------------------------------

_SECTIONS = 22
_HEAD = struct.Struct(f"<HIII{_SECTIONS}Q")  # version, spans, resources, scopes, the sections' lengths
VERSION = 1


def _joined(items: list[bytes]) -> tuple[bytes, bytes]:
    return b"".join(items), np.array([len(i) for i in items], dtype="<u8").tobytes()


def encode(batch: SpanBatch) -> list[bytes]:
    """The batch as buffers to write one after the other (the span bodies are not copied)."""
    resources, resource_lengths = _joined(batch.resources)
    scopes, scope_lengths = _joined(batch.scopes)
    services, service_lengths = _joined([s.encode() for s in batch.services])
    instances, instance_lengths = _joined([s.encode() for s in batch.instances])
    sections: list[bytes] = [
        batch.trace_id,
        batch.span_id,
        batch.parent_id,
        np.ascontiguousarray(batch.kind, dtype=np.uint8).tobytes(),
        np.ascontiguousarray(batch.status, dtype=np.uint8).tobytes(),
        np.ascontiguousarray(batch.start_us, dtype="<i8").tobytes(),
        np.ascontiguousarray(batch.duration_us, dtype="<i8").tobytes(),
        batch.operation,
        np.ascontiguousarray(batch.operation_offsets, dtype="<i8").tobytes(),
        batch.body,
        np.ascontiguousarray(batch.body_offsets, dtype="<i8").tobytes(),
        np.ascontiguousarray(batch.resource_index, dtype="<i4").tobytes(),
        np.ascontiguousarray(batch.scope_index, dtype="<i4").tobytes(),
        np.ascontiguousarray(batch.signature, dtype="<u8").tobytes(),
        resources,
        resource_lengths,
        scopes,
        scope_lengths,
        services,
        service_lengths,
        instances,
        instance_lengths,
    ]
    lengths = [len(s) for s in sections]
    head = _HEAD.pack(VERSION, batch.size, len(batch.resources), len(batch.scopes), *lengths)
    return [head, *sections]


def _split(data: bytes, lengths: bytes) -> list[bytes]:
    out, position = [], 0
    for length in np.frombuffer(lengths, dtype="<u8").tolist():
        out.append(data[position : position + length])
        position += length
    if position != len(data):
        raise ValueError("list lengths do not add up")
    return out


def decode(payload: bytes) -> SpanBatch:
    """A batch from `encode`'s bytes; `ValueError` if they are not one."""
    if len(payload) < _HEAD.size:
        raise ValueError("record too short")
    version, size, resource_count, scope_count, *lengths = _HEAD.unpack_from(payload)
    if version != VERSION:
        raise ValueError(f"unknown record version {version}")
    if _HEAD.size + sum(lengths) != len(payload):
        raise ValueError("section lengths do not match the record")
    parts, position = [], _HEAD.size
    for length in lengths:
        parts.append(payload[position : position + length])
        position += length
    widths = (16, 8, 8, 1, 1, 8, 8, None, 8, None, 8, 4, 4, 8 * tagsig.WORDS)
    for number, width in enumerate(widths):
        expected = width * (size + (1 if number in (8, 10) else 0)) if width else None
        if expected is not None and len(parts[number]) != expected:
            raise ValueError(f"section {number} holds {len(parts[number])} bytes, not {expected}")
    batch = SpanBatch(
        size=size,
        trace_id=parts[0],
        span_id=parts[1],
        parent_id=parts[2],
        kind=np.frombuffer(parts[3], dtype=np.uint8),
        status=np.frombuffer(parts[4], dtype=np.uint8),
        start_us=np.frombuffer(parts[5], dtype="<i8").astype(np.int64),
        duration_us=np.frombuffer(parts[6], dtype="<i8").astype(np.int64),
        operation=parts[7],
        operation_offsets=np.frombuffer(parts[8], dtype="<i8").astype(np.int64),
        body=parts[9],
        body_offsets=np.frombuffer(parts[10], dtype="<i8").astype(np.int64),
        resource_index=np.frombuffer(parts[11], dtype="<i4").astype(np.int32),
        scope_index=np.frombuffer(parts[12], dtype="<i4").astype(np.int32),
        resources=_split(parts[14], parts[15]),
        services=[s.decode() for s in _split(parts[18], parts[19])],
        instances=[s.decode() for s in _split(parts[20], parts[21])],
        scopes=_split(parts[16], parts[17]),
        signature=np.frombuffer(parts[13], dtype="<u8").astype(np.uint64).reshape(size, tagsig.WORDS),
    )
    if len(batch.resources) != resource_count or len(batch.scopes) != scope_count:
        raise ValueError("resource or scope count does not match")
    if batch.operation_offsets[-1] != len(batch.operation) or batch.body_offsets[-1] != len(batch.body):
        raise ValueError("offsets do not match their buffers")
    return batch
