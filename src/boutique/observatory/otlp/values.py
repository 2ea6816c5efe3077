"""OTLP `AnyValue` and `KeyValue` lists to plain Python values and back."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

Leaf = Callable[[str, Any], Any]  # (which field of the oneof, its value) → the Python value to use


def from_any(value: AnyValue, leaf: Leaf | None = None) -> Any:
    """The Python value of an AnyValue: str, bool, int, float, bytes, list or dict (None when empty).

    With `leaf`, every scalar inside (string, bool, int, double, bytes) is what `leaf` makes of it.
    """
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [from_any(v, leaf) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values, leaf)
    if leaf is None:
        return getattr(value, which)
    return leaf(which, getattr(value, which))


def attributes(pairs: Iterable[KeyValue], leaf: Leaf | None = None) -> dict[str, Any]:
    """A KeyValue list as a dict (a repeated key keeps its last value); `leaf` as for `from_any`."""
    return {kv.key: from_any(kv.value, leaf) for kv in pairs}


def to_any(value: Any) -> AnyValue:
    """An AnyValue holding a Python value (other types become their string form)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list | tuple):
        out = AnyValue()
        out.array_value.values.extend(to_any(v) for v in value)
        return out
    if isinstance(value, Mapping):
        out = AnyValue()
        out.kvlist_value.values.extend(to_key_values(value))
        return out
    return AnyValue(string_value=str(value))


def to_key_values(values: Mapping[str, Any]) -> list[KeyValue]:
    """KeyValues for a dict of Python values."""
    return [KeyValue(key=str(k), value=to_any(v)) for k, v in values.items()]


def jsonable(value: Any) -> Any:
    """A value as JSON can carry it: bytes become base64, containers are converted inside."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
