"""What the span walker accepts and what it makes of it: one rule set, two implementations.

Both walkers (the compiled `_walker` and `walk_python`) turn a serialized OTLP
`ExportTraceServiceRequest` into a `SpanBatch` by these rules, and a test holds them to identical
results. Validity is what upb (protobuf's parser) accepts for the schema below, parsed as one message:

    Request        resource_spans=1 (ResourceSpans, repeated)
    ResourceSpans  resource=1 (bytes), scope_spans=2 (ScopeSpans, repeated)
    ScopeSpans     scope=1 (bytes), spans=2 (Span, repeated)
    Span           trace_id=1, span_id=2, parent_span_id=4 (bytes), name=5 (string), kind=6 (int32),
                   start_time_unix_nano=7, end_time_unix_nano=8 (fixed64), attributes=9 (bytes,
                   repeated), events=11 (Event, repeated), status=15 (Status)
    Event          attributes=3 (bytes, repeated)
    Status         message=2 (string), code=3 (int32)

and each ResourceSpans' resource, parsed by itself, for the schema

    Resource       attributes=1 (KeyValue, repeated)
    KeyValue       key=1 (string), value=2 (AnyValue)
    AnyValue       one of string_value=1 (string), bool_value=2 (bool), int_value=3 (int64),
                   double_value=4 (double), array_value=5, kvlist_value=6, bytes_value=7 (bytes)

So: tags of at most 5 bytes and 32 bits, field number 0 refused, varints of at most 10 bytes, lengths
within the enclosing message, wire types 6 and 7 refused, groups closed by their own number, at most
`MAX_DEPTH` nested messages and groups per parse; strings (span name, status message, attribute keys
and string values of the resource) valid UTF-8; any other field — unknown, or a known number with
another wire type — skipped. A field given twice keeps its last value; a message field given twice
is merged (its fields continue). Everything else of a span (event names, link and attribute
contents, ...) is kept in its bytes, unread.

What a valid request becomes: spans in their order; a span whose trace id is not 16 bytes or span id
not 8, or either all zero, is refused (counted in `rejected`, `BAD_IDS` as the reason); a parent not 8
bytes or all zero makes a root; a kind outside 0..5 and a status code outside 0..2 (as int32) become
0; start_us = start // 1000, duration_us = (end - start) // 1000 when end > start, else 0; the body is
the span's bytes as they arrived. Resources and scopes are listed once per distinct value (bytes)
used by a kept span, in the order of their first such span; a resource's service is its last
non-empty string `service.name`, else `UNKNOWN_SERVICE`, its instance the string value of its last
`service.instance.id` ("" when not a string). The tag signature is `tagsig`'s: CRC-32 of every
serialized KeyValue of the span's attributes, its events' attributes and its resource's attributes.
"""

from __future__ import annotations

UNKNOWN_SERVICE = "unknown_service"
BAD_IDS = "trace_id must be 16 bytes and span_id 8 bytes, not all zero"
MALFORMED = "malformed protobuf (truncated, bad tag, length or wire type, invalid UTF-8, or nested too deep)"
MAX_DEPTH = 100  # upb's default limit of nested messages and groups in one parse


class WalkError(ValueError):
    """The payload is not a serialized ExportTraceServiceRequest: nothing in it can be stored."""
