"""Card-number redaction: values that look like a payment card number keep only their last four digits.

A digit run of 13 to 19 digits (spaces or dashes allowed between them) that passes the Luhn check is a
card number. A batch's span bodies are one buffer, scanned with one regular expression; only a span
holding such a run is decoded, masked and re-serialized, so the common case costs one C-level pass
over the batch. Log records get the same: their bodies and their attributes (JSON text) are scanned
joined, by one byte translation that turns every digit into "0" and drops spaces and dashes, for 13
zeros in a row; only a record holding such a run is masked (an attribute's JSON decoded for it).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from boutique.cards import luhn_valid
from boutique.observatory.logs.model import LogBatch
from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.walk import card_candidates_compiled
from boutique.observatory.signals import Batch

_CANDIDATE_BYTES = re.compile(rb"\d(?:[ -]?\d){12,18}")
_NOT_DIGITS = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)
_CANDIDATE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_THIRTEEN_DIGITS = b"0" * 13


def mask_text(text: str) -> str:
    """The text with every card-number-looking run replaced by asterisks and its last four digits."""

    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
            return match.group()
        return "*" * (len(digits) - 4) + digits[-4:]

    return _CANDIDATE.sub(mask, text)


def _mask_value(value: AnyValue) -> bool:
    """Mask strings inside one AnyValue in place; whether anything changed."""
    which = value.WhichOneof("value")
    if which == "string_value":
        masked = mask_text(value.string_value)
        if masked != value.string_value:
            value.string_value = masked
            return True
        return False
    if which == "array_value":
        return any([_mask_value(v) for v in value.array_value.values])
    if which == "kvlist_value":
        return _mask_pairs(value.kvlist_value.values)
    return False


def _mask_pairs(pairs: list[KeyValue]) -> bool:
    return any([_mask_value(kv.value) for kv in pairs])


def redact_span(body: bytes) -> tuple[bytes, str] | None:
    """The masked span bytes and masked name, or None when nothing needed masking."""
    try:
        span = Span.FromString(body)
    except DecodeError:
        return None
    changed = _mask_pairs(span.attributes)  # type: ignore[arg-type]
    for event in span.events:
        changed |= _mask_pairs(event.attributes)  # type: ignore[arg-type]
        masked = mask_text(event.name)
        changed |= masked != event.name
        event.name = masked
    for link in span.links:
        changed |= _mask_pairs(link.attributes)  # type: ignore[arg-type]
    for holder, field in ((span, "name"), (span.status, "message")):
        text = getattr(holder, field)
        masked = mask_text(text)
        if masked != text:
            setattr(holder, field, masked)
            changed = True
    return (span.SerializeToString(), span.name) if changed else None


def _mask_json_strings(value: Any) -> Any:
    """A decoded JSON value with every string inside it (not keys, not numbers) masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        return [_mask_json_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_json_strings(v) for k, v in value.items()}
    return value


def may_hold_card(text: str) -> bool:
    """Whether the text may hold a card number: 13 digits in a row, spaces and dashes aside (C-speed)."""
    return _THIRTEEN_DIGITS in text.encode("utf-8", "surrogatepass").translate(_DIGITS_AS_ZERO, b" -")


def redact_logs(batch: LogBatch) -> int:
    """Mask card numbers in the records' bodies and string attribute values, in place; records changed."""
    changed: set[int] = set()
    if may_hold_card("\n".join(batch.body)):
        for index, body in enumerate(batch.body):
            masked = mask_text(body) if may_hold_card(body) else body
            if masked != body:
                batch.body[index] = masked
                changed.add(index)
    if may_hold_card("\n".join(batch.attributes)):
        for index, text in enumerate(batch.attributes):
            if not may_hold_card(text):
                continue
            decoded = json.loads(text)
            masked = _mask_json_strings(decoded)
            if masked != decoded:
                batch.attributes[index] = json.dumps(masked, ensure_ascii=False, separators=(",", ":"))
                changed.add(index)
    return len(changed)


class CardRedactor:
    """The processor: masks card numbers in spans and log records before anything is stored."""

    def __init__(self) -> None:
        self.redacted_spans = 0
        self.redacted_logs = 0  # log records changed

    def process(self, batch: Batch) -> Batch:
        """The batch with every card-number-looking value masked."""
        if isinstance(batch, LogBatch):
            self.redacted_logs += redact_logs(batch)
            return batch
        if not isinstance(batch, SpanBatch):
            return batch
        changes: dict[int, tuple[bytes, str]] = {}
        for index in card_candidates(batch):
            result = redact_span(batch.body_at(index))
            if result is not None:
                changes[index] = result
        batch.replace_spans(changes)
        self.redacted_spans += len(changes)
        return batch


def card_candidates(batch: SpanBatch) -> list[int]:
    """Indexes of the spans holding a digit run a card number could be (compiled when the walker is)."""
    if card_candidates_compiled is not None:
        return card_candidates_compiled(batch.body, batch.body_offsets)
    return card_candidates_python(batch)


def card_candidates_python(batch: SpanBatch) -> list[int]:
    """`card_candidates` in Python: one regular-expression pass over the batch, each hit's span confirmed."""
    # Fewer than 13 digits in the whole batch: no run anywhere (dropping the other bytes is one fast pass).
    if len(batch.body.translate(None, _NOT_DIGITS)) < 13:
        return []
    found: set[int] = set()
    offsets = batch.body_offsets
    for match in _CANDIDATE_BYTES.finditer(batch.body):
        # A run that crosses from one span's bytes into the next is confirmed within each span alone.
        for index in range(_span_at(offsets, match.start()), _span_at(offsets, match.end() - 1) + 1):
            if index not in found and _CANDIDATE_BYTES.search(batch.body_at(index)):
                found.add(index)
    return sorted(found)


def _span_at(offsets: np.ndarray, position: int) -> int:
    """The index of the span whose bytes hold `position` of the concatenated bodies."""
    return int(np.searchsorted(offsets, position, side="right")) - 1
