"""What the benchmarks' OTLP payload builders share: attributes of plain values, the parse-only baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from boutique.observatory.otlp.values import to_any

M = TypeVar("M", bound=Message)


def kv(key: str, value: str | int | float | bool) -> KeyValue:
    """One attribute of a plain value."""
    return KeyValue(key=key, value=to_any(value))


def parse_counting(chunk: list[bytes], message: Callable[[], M], count: Callable[[M], int]) -> int:
    """Parse every payload with the full opentelemetry.proto class `message`; what `count` sees, summed."""
    seen = 0
    for payload in chunk:
        request = message()
        request.ParseFromString(payload)
        seen += count(request)
    return seen
