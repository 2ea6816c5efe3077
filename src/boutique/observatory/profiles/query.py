"""Reading stored profile samples: flame-graph trees and their diff, top functions, the spans behind a frame.

Every function takes a read cursor (from `Store.read`). Rows are summed per stack in SQL — a profile
names few stacks however many rows it has — then the stacks' frames are read once and merged into a
tree here, at function granularity (a function's lines as one frame, `function_label`) or line
granularity (frames as stored). A tree is written as JSON without recursion (see `tree_json`), so the
deepest Python stacks (a thousand frames) still encode.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import duckdb

from boutique.observatory.logs.table import trace_key
from boutique.observatory.profiles.model import NANOSECONDS, function_label

Granularity = Literal["function", "line"]
GRANULARITIES: tuple[Granularity, ...] = ("function", "line")
DEFAULT_TYPE = "cpu"
DEFAULT_WINDOW_US = 3600 * 1_000_000  # the last hour
DEFAULT_TOP, MAX_TOP = 50, 1000
DEFAULT_TRACES, MAX_TRACES = 20, 1000
ROOT = "total"


@dataclass(frozen=True)
class ProfileQuery:
    """The rows meeting every condition given (None: any): one type of one service's samples, in a window."""

    service: str | None = None
    instance: str | None = None
    type: str = DEFAULT_TYPE
    trace_id: bytes | None = None  # 16 bytes
    span_id: bytes | None = None  # 8 bytes
    thread: str | None = None
    start_us: int | None = None  # None: no bound (a span's rows, whenever they were taken)
    end_us: int | None = None
    granularity: Granularity = "function"


def conditions(query: ProfileQuery, *extra: str) -> tuple[str, list[Any]]:
    """The `WHERE ...` over `profile_samples` of the query's rows (and the `extra` conditions) and its
    parameters."""
    where = ["type = ?"]
    params: list[Any] = [query.type]
    if query.trace_id is not None:
        where.append("trace_key = ? AND trace_id = ?")
        params += [trace_key(query.trace_id), query.trace_id]
    for condition, value in (
        ("span_id = ?", query.span_id),
        ("service = ?", query.service),
        ("instance = ?", query.instance),
        ("thread = ?", query.thread),
        ("time_us >= ?", query.start_us),
        ("time_us <= ?", query.end_us),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    return "WHERE " + " AND ".join([*where, *extra]), params


# ---- windows -----------------------------------------------------------------------------------


def span_window(
    cursor: duckdb.DuckDBPyConnection, trace_id: bytes, span_id: bytes | None
) -> tuple[int, int] | None:
    """A stored span's (or, without a span id, a stored trace's) start and end in µs; None if not stored."""
    sql = "SELECT min(start_us), max(start_us + duration_us) FROM spans WHERE trace_key = ? AND trace_id = ?"
    params: list[Any] = [trace_key(trace_id), trace_id]
    if span_id is not None:
        sql += " AND span_id = ?"
        params.append(span_id)
    row = cursor.execute(sql, params).fetchall()
    if not row or row[0][0] is None:
        return None
    return int(row[0][0]), int(row[0][1])


def with_window(
    cursor: duckdb.DuckDBPyConnection,
    query: ProfileQuery,
    start_us: int | None,
    end_us: int | None,
    now_us: int,
) -> tuple[ProfileQuery, int, int]:
    """The query with its time bounds, and the window to show for it.

    Given neither bound, a trace's (or span's) query takes the stored trace's (span's) own window, and
    then every row linked to it counts, whatever its time (a row's time is its first sample's, taken by
    another clock reading than the span's start); otherwise `end` defaults to now and `start` to an
    hour before `end`.
    """
    if query.trace_id is not None and start_us is None and end_us is None:
        found = span_window(cursor, query.trace_id, query.span_id)
        if found is not None:
            return replace(query, start_us=None, end_us=None), found[0], found[1]
    end = now_us if end_us is None else end_us
    start = max(0, end - DEFAULT_WINDOW_US) if start_us is None else start_us
    return replace(query, start_us=start, end_us=end), start, end


# ---- stacks ------------------------------------------------------------------------------------


@dataclass
class Stacks:
    """The query's rows summed per stack: each stack's frames (root first, at the query's granularity)
    and value, the unit most of the value is in, and how many rows there were."""

    frames: list[Sequence[str]] = field(default_factory=list)
    values: list[int] = field(default_factory=list)
    unit: str = NANOSECONDS
    rows: int = 0

    def __iter__(self) -> Iterator[tuple[Sequence[str], int]]:
        return zip(self.frames, self.values, strict=True)


def relabel(stacks: Sequence[Sequence[str]], granularity: Granularity) -> list[Sequence[str]]:
    """The stacks at a granularity: as stored for `line`, every frame's `function_label` for `function`
    (each distinct frame relabelled once)."""
    if granularity == "line":
        return list(stacks)
    labels = {frame: function_label(frame) for frame in set().union(*stacks)}
    return [list(map(labels.__getitem__, frames)) for frames in stacks]


def stack_values(cursor: duckdb.DuckDBPyConnection, query: ProfileQuery) -> Stacks:
    """The query's rows summed per stack (in SQL), with their stacks' frames."""
    where, params = conditions(query)
    rows = cursor.execute(
        f"""
        WITH picked AS (
            SELECT stack_id, sum(value) AS value, count(*) AS n, min(unit) AS unit
            FROM profile_samples {where} GROUP BY stack_id
        )
        SELECT coalesce(s.frames, []::VARCHAR[]), p.value, p.n, p.unit
        FROM picked p LEFT JOIN profile_stacks s ON s.stack_id = p.stack_id
        """,
        params,
    ).fetchall()
    units: Counter[str] = Counter()
    found = Stacks()
    for frames, value, count, unit in rows:
        found.frames.append(frames)
        found.values.append(int(value))
        found.rows += int(count)
        units[unit] += int(value)
    found.frames = relabel(found.frames, query.granularity)
    if units:
        found.unit = units.most_common(1)[0][0]
    return found


# ---- trees -------------------------------------------------------------------------------------


class Node:
    """A frame of a flame graph: its value as the stack's last frame (self) and in all (total), the same
    in a diff's base window, and its callees by name."""

    __slots__ = ("base_self", "base_total", "children", "name", "self", "total")

    def __init__(self, name: str) -> None:
        self.name = name
        self.self = 0
        self.total = 0
        self.base_self = 0
        self.base_total = 0
        self.children: dict[str, Node] = {}

    def path(self, frames: Sequence[str]) -> list[Node]:
        """This node and the nodes of `frames` (root first) below it, made where missing."""
        nodes, node = [self], self
        for name in frames:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = Node(name)
            nodes.append(child)
            node = child
        return nodes

    def add(self, frames: Sequence[str], value: int, base: bool = False) -> None:
        """Count a stack (frames root first, from this node down) with its value (in the base window's
        figures with `base`)."""
        nodes = self.path(frames)
        if base:
            for node in nodes:
                node.base_total += value
            nodes[-1].base_self += value
            return
        for node in nodes:
            node.total += value
        nodes[-1].self += value

    def sorted_children(self) -> list[Node]:
        """Callees by total, largest first (ties by name)."""
        return sorted(self.children.values(), key=lambda child: (-child.total, child.name))


OTHER = "(other)"  # the frame standing for a node's callees too small to keep in a pruned tree


def prune(root: Node, max_nodes: int) -> int:
    """Keep about the `max_nodes` largest frames (by total, or base total in a diff) and fold the
    callees of each kept frame that were too small into one "(other)" callee; how many frames went.

    A callee is never larger than its caller, so the kept frames stay one tree; totals stay exact. A
    flame graph has no room for the rest: a frame of 1/8192 of the whole is under a pixel wide.
    """
    sizes: list[int] = []
    todo = [root]
    while todo:
        node = todo.pop()
        for child in node.children.values():
            sizes.append(max(child.total, child.base_total))
            todo.append(child)
    if max_nodes <= 0 or len(sizes) <= max_nodes:
        return 0
    sizes.sort(reverse=True)
    least = max(sizes[max_nodes - 1], 1)
    dropped = 0
    todo = [root]
    while todo:
        node = todo.pop()
        small = [c for c in node.children.values() if max(c.total, c.base_total) < least]
        if small:
            other = Node(OTHER)
            for child in small:
                del node.children[child.name]
                dropped += count_nodes(child)
                other.total += child.total
                other.self += child.total
                other.base_total += child.base_total
                other.base_self += child.base_total
            node.children[OTHER] = other
            dropped -= 1
        todo.extend(child for child in node.children.values() if child.name != OTHER)
    return dropped


def count_nodes(root: Node) -> int:
    """Frames in a (sub)tree, its root included."""
    found, todo = 0, [root]
    while todo:
        node = todo.pop()
        found += 1
        todo.extend(node.children.values())
    return found


def tree_json(root: Node, diff: bool = False) -> str:
    """A tree as JSON text: `{"name", "self", "total", ["baseSelf", "baseTotal",] "children": [...]}`.

    Written with an explicit stack: `json.dumps` of nested dicts gives up about 500 levels down.
    """
    parts: list[str] = []
    names: dict[str, str] = {}
    todo: list[Node | str] = [root]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        name = names.get(item.name)
        if name is None:
            name = names[item.name] = json.dumps(item.name, ensure_ascii=False)
        base = f',"baseSelf":{item.base_self},"baseTotal":{item.base_total}' if diff else ""
        parts.append(f'{{"name":{name},"self":{item.self},"total":{item.total}{base},"children":[')
        todo.append("]}")
        children = item.sorted_children()
        for index in range(len(children) - 1, -1, -1):
            todo.append(children[index])
            if index:
                todo.append(",")
    return "".join(parts)


def flame_tree(cursor: duckdb.DuckDBPyConnection, query: ProfileQuery) -> tuple[Node, Stacks]:
    """The query's flame graph (root "total") and the stacks it was built from."""
    stacks = stack_values(cursor, query)
    root = Node(ROOT)
    for frames, value in stacks:
        root.add(frames, value)
    return root, stacks


def diff_tree(
    cursor: duckdb.DuckDBPyConnection, query: ProfileQuery, base: ProfileQuery
) -> tuple[Node, Stacks, Stacks]:
    """One tree of two windows' profiles: the query's values, and the base query's as `base_*`."""
    root, stacks = flame_tree(cursor, query)
    base_stacks = stack_values(cursor, base)
    for frames, value in base_stacks:
        root.add(frames, value, base=True)
    return root, stacks, base_stacks


# ---- functions and spans -----------------------------------------------------------------------


def top_functions(
    cursor: duckdb.DuckDBPyConnection, query: ProfileQuery, limit: int = DEFAULT_TOP
) -> list[dict[str, Any]]:
    """Functions (or lines) by self value, largest first: `{"name", "self", "total"}`, where a stack's
    value counts once in the total of each function in it, however often it recurses."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for frames, value in stack_values(cursor, query):
        if frames:
            own[frames[-1]] += value
        for name in set(frames):
            total[name] += value
    ranked = sorted(total, key=lambda name: (-own[name], -total[name], name))
    return [{"name": name, "self": own[name], "total": total[name]} for name in ranked[:limit]]


def traces_for_frame(
    cursor: duckdb.DuckDBPyConnection, query: ProfileQuery, frame: str, limit: int = DEFAULT_TRACES
) -> list[dict[str, Any]]:
    """The spans whose linked rows spent the most in stacks holding `frame` (at the query's granularity),
    most first: `{"traceID", "spanID", "service", "operation", "value", "start"}`, with the operation and
    start read from the spans table ("" for a span not stored)."""
    wanted = function_label(frame) if query.granularity == "function" else frame
    linked = "span_id <> ''::BLOB"
    where, params = conditions(query, linked)
    rows = cursor.execute(
        f"""
        SELECT s.stack_id, s.frames FROM profile_stacks s
        WHERE s.stack_id IN (SELECT DISTINCT stack_id FROM profile_samples {where})
        """,
        params,
    ).fetchall()
    ids = [int(row[0]) for row in rows]
    relabelled = relabel([row[1] for row in rows], query.granularity)
    matched = [key for key, frames in zip(ids, relabelled, strict=True) if wanted in frames]
    if not matched:
        return []
    where, params = conditions(query, linked, "stack_id IN (SELECT unnest(?::UBIGINT[]))")
    spans = cursor.execute(
        f"""
        SELECT trace_id, span_id, service, sum(value) AS spent FROM profile_samples {where}
        GROUP BY trace_id, span_id, service ORDER BY spent DESC, trace_id, span_id LIMIT ?
        """,
        [*params, matched, limit],
    ).fetchall()
    stored = span_names(cursor, [(bytes(row[0]), bytes(row[1])) for row in spans])
    found = []
    for trace, span, service, spent in spans:
        operation, start = stored.get((bytes(trace), bytes(span)), ("", ""))
        found.append(
            {
                "traceID": bytes(trace).hex(),
                "spanID": bytes(span).hex(),
                "service": service,
                "operation": operation,
                "value": int(spent),
                "start": start,
            }
        )
    return found


def span_names(
    cursor: duckdb.DuckDBPyConnection, spans: Sequence[tuple[bytes, bytes]]
) -> dict[tuple[bytes, bytes], tuple[str, int]]:
    """(operation, start µs) of each of these (trace id, span id) stored in the spans table.

    Read by `trace_key` alone, the condition the spans table's index answers; ids checked on the rows.
    """
    if not spans:
        return {}
    keys = sorted({trace_key(trace) for trace, _ in spans})
    rows = cursor.execute(
        f"SELECT trace_id, span_id, operation, start_us FROM spans WHERE trace_key IN ({', '.join(map(str, keys))})"
    ).fetchall()
    wanted = set(spans)
    found: dict[tuple[bytes, bytes], tuple[str, int]] = {}
    for trace, span, operation, start in rows:
        key = (bytes(trace), bytes(span))
        if key in wanted and (key not in found or int(start) < found[key][1]):
            found[key] = (operation, int(start))
    return found


def services(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every service with stored samples, sorted, with the types and instances it has samples of."""
    rows = cursor.execute(
        "SELECT service, list(DISTINCT type), list(DISTINCT instance) FROM profile_samples GROUP BY service "
        "ORDER BY service"
    ).fetchall()
    return [
        {"service": service, "types": sorted(types), "instances": sorted(instances)}
        for service, types, instances in rows
    ]
