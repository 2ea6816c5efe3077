"""Rows of a `MetricBatch` as Arrow arrays (nanoarrow over NumPy buffers) that DuckDB inserts in one statement.

Building the columns costs a pass per column over the rows; the insert is then one `INSERT ... SELECT`
per table reading the array through the Arrow C stream interface, with no parameter binding and no
statement per row (see `metrics.table`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

import nanoarrow as na
import numpy as np

UBIGINT, BIGINT, INTEGER, DOUBLE = na.uint64(), na.int64(), na.int32(), na.float64()
BOOLEAN, TEXT, BLOB = na.bool_(), na.large_string(), na.large_binary()
DOUBLES, COUNTS = na.list_(DOUBLE), na.list_(UBIGINT)
_DTYPES = {
    na.Type.UINT64: np.uint64,
    na.Type.INT64: np.int64,
    na.Type.INT32: np.int32,
    na.Type.DOUBLE: np.float64,
    na.Type.BOOL: np.bool_,
}


def _validity(present: np.ndarray) -> np.ndarray | None:
    """Arrow's validity bitmap of `present` (None when every value is there)."""
    return None if present.all() else np.packbits(present, bitorder="little")


def _present(values: Sequence[Any]) -> np.ndarray:
    """Which values are not None (C loops only: this runs per column per batch)."""
    size = len(values)
    nulls = values.count(None) if isinstance(values, tuple | list) else sum(v is None for v in values)
    if nulls == 0:
        return np.ones(size, dtype=np.bool_)
    if nulls == size:
        return np.zeros(size, dtype=np.bool_)
    return np.fromiter(map(operator.is_not, values, itertools.repeat(None)), dtype=np.bool_, count=size)


def numbers(values: Sequence[Any], kind: na.Schema) -> na.CArray:
    """A number (or boolean) column; None is null."""
    dtype = _DTYPES[kind.type]
    present = _present(values)
    data: np.ndarray
    if present.all():
        data = np.array(values, dtype=dtype)
    elif not present.any():
        data = np.zeros(len(values), dtype=dtype)
    else:
        filled = np.array(values, dtype=object)
        filled[~present] = 0
        data = filled.astype(dtype)
    if dtype is np.bool_:
        return na.c_array_from_buffers(
            kind, len(values), [_validity(present), np.packbits(data, bitorder="little")]
        )
    return na.c_array_from_buffers(kind, len(values), [_validity(present), data])


def lists(values: Sequence[Sequence[Any] | None], kind: na.Schema) -> na.CArray:
    """A list column of numbers (bucket bounds and counts); None is null."""
    size = len(values)
    present = _present(values)
    lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int64, count=size)
    offsets = np.zeros(size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    item = kind.value_type
    flat: np.ndarray = np.fromiter(
        itertools.chain.from_iterable(v for v in values if v is not None),
        dtype=_DTYPES[item.type],
        count=int(offsets[-1]),
    )
    child = na.c_array_from_buffers(item, len(flat), [None, flat])
    return na.c_array_from_buffers(kind, size, [_validity(present), offsets], children=[child])


def texts(values: Sequence[Any], kind: na.Schema) -> na.CArray:
    """A string or binary column; None is null."""
    return na.c_array(list(values), kind)


def table(columns: dict[str, tuple[na.Schema, na.CArray]], size: int) -> na.Array:
    """The columns as one Arrow struct array (what DuckDB scans as a table)."""
    schema = na.struct({name: kind for name, (kind, _) in columns.items()})
    return na.Array(na.c_array_from_buffers(schema, size, [None], children=[a for _, a in columns.values()]))


def build(rows: Sequence[tuple[Any, ...]], names: Sequence[str], kinds: dict[str, na.Schema]) -> na.Array:
    """Rows (tuples in `names` order) as a struct array with each column of its kind in `kinds`."""
    transposed: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    columns = {}
    for name, values in zip(names, transposed, strict=True):
        kind = kinds[name]
        if kind.type == na.Type.LIST:
            columns[name] = (kind, lists(values, kind))
        elif kind.type in (na.Type.LARGE_STRING, na.Type.LARGE_BINARY):
            columns[name] = (kind, texts(values, kind))
        else:
            columns[name] = (kind, numbers(values, kind))
    return table(columns, len(rows))
