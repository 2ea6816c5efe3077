"""A query's samples as a pprof `Profile`, gzip-compressed: what `go tool pprof` and speedscope open.

A stored frame `qualname (file:line)` becomes a Location with one Line (its Function and the line); a
Function is one (qualname, file) pair. A sample is one (stack, thread) of the query's rows summed, its
locations leaf first, its one value in the query's type and unit, the thread's name as the label
`thread`. Frames always go out with their lines whatever granularity the query asks for: pprof's own
options (`-functions`, `-lines`) choose how to merge them.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from boutique.observatory.profiles import pprof_pb2 as pb
from boutique.observatory.profiles.model import NANOSECONDS
from boutique.observatory.profiles.query import ProfileQuery, conditions

_LINE = re.compile(r"^(.*) \((.*):(\d+)\)$")  # a frame label, as `model.frame_label` writes it


@dataclass(frozen=True)
class Row:
    """One (stack, thread) of a query's rows, summed."""

    frames: Sequence[str]  # root first
    thread: str
    value: int


def split_label(label: str) -> tuple[str, str, int]:
    """A frame label's (qualname, file, line); a label of another shape is a name without file or line."""
    found = _LINE.match(label)
    if found is None:
        return label, "", 0
    return found.group(1), found.group(2), int(found.group(3))


def query_rows(cursor: duckdb.DuckDBPyConnection, query: ProfileQuery) -> tuple[list[Row], str]:
    """The query's rows summed per stack and thread (in SQL), with their frames, and the unit most of
    the value is in."""
    where, params = conditions(query)
    found = cursor.execute(
        f"""
        WITH picked AS (
            SELECT stack_id, thread, sum(value) AS value, min(unit) AS unit
            FROM profile_samples {where} GROUP BY stack_id, thread
        )
        SELECT coalesce(s.frames, []::VARCHAR[]), p.thread, p.value, p.unit
        FROM picked p LEFT JOIN profile_stacks s ON s.stack_id = p.stack_id
        ORDER BY p.value DESC, p.stack_id, p.thread
        """,
        params,
    ).fetchall()
    units: Counter[str] = Counter()
    rows = []
    for frames, thread, value, unit in found:
        rows.append(Row(frames, thread, int(value)))
        units[unit] += int(value)
    return rows, units.most_common(1)[0][0] if units else NANOSECONDS


class _Strings:
    """A pprof string table: "" first, each string once."""

    def __init__(self) -> None:
        self.table: list[str] = [""]
        self._index: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.table)
            self.table.append(text)
        return index


def encode(rows: Sequence[Row], type_: str, unit: str, start_us: int, end_us: int) -> bytes:
    """The rows as a gzip-compressed pprof `Profile` of one sample type, covering [start_us, end_us]."""
    profile = pb.Profile()
    string = _Strings()
    profile.sample_type.add(type=string(type_), unit=string(unit))
    profile.period_type.type = string(type_)
    profile.period_type.unit = string(unit)
    profile.time_nanos = start_us * 1000
    profile.duration_nanos = max(0, end_us - start_us) * 1000
    # One mapping that says every location is symbolized already: pprof then looks for no binary.
    profile.mapping.add(
        id=1, filename=string("python"), has_functions=True, has_filenames=True, has_line_numbers=True
    )
    functions: dict[tuple[str, str], int] = {}
    locations: dict[str, int] = {}
    thread_key = string("thread")
    for row in rows:
        ids = []
        for label in reversed(row.frames):  # pprof lists a sample's locations leaf first
            location = locations.get(label)
            if location is None:
                name, file, line = split_label(label)
                function = functions.get((name, file))
                if function is None:
                    function = functions[(name, file)] = len(functions) + 1
                    profile.function.add(
                        id=function, name=string(name), system_name=string(name), filename=string(file)
                    )
                location = locations[label] = len(locations) + 1
                profile.location.add(id=location, mapping_id=1).line.add(function_id=function, line=line)
            ids.append(location)
        sample = profile.sample.add(location_id=ids, value=[row.value])
        if row.thread:
            sample.label.add(key=thread_key, str=string(row.thread))
    profile.string_table.extend(string.table)
    return gzip.compress(profile.SerializeToString(), compresslevel=6, mtime=0)


def query_pprof(cursor: duckdb.DuckDBPyConnection, query: ProfileQuery, start_us: int, end_us: int) -> bytes:
    """The query's samples as a gzip-compressed pprof `Profile` covering [start_us, end_us]."""
    rows, unit = query_rows(cursor, query)
    return encode(rows, query.type, unit, start_us, end_us)
