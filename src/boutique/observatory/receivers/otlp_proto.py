"""OTLP/protobuf `ExportTraceServiceRequest` bytes to a `SpanBatch` (every receiver ends here).

The span walker (`otlp.walk`) turns the request into columns in one pass over its bytes: each span's
indexed fields, its tag signature and its bytes as they arrived, with no Python object per span.
Spans with invalid ids are refused one by one (OTLP partial success), not the whole request.
"""

from __future__ import annotations

import json
from typing import Any

from boutique.observatory.model import SpanBatch
from boutique.observatory.otlp.walk import WalkError, walk

UNKNOWN_SERVICE = "unknown_service"


class PayloadError(ValueError):
    """The payload cannot be decoded at all: the sender must not retry it (HTTP 400, INVALID_ARGUMENT)."""


def json_document(data: bytes) -> Any:
    """A JSON request body parsed (for the JSON receivers); `PayloadError` when it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PayloadError(f"not valid JSON: {exc}") from None


def decode(data: bytes) -> SpanBatch:
    """The spans of a serialized ExportTraceServiceRequest; `PayloadError` if it is not one."""
    try:
        return walk(data)
    except WalkError as exc:
        raise PayloadError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
