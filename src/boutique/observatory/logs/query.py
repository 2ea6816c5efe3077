"""Finding stored log records: the search of `/api/logs`, what the live tail polls for, the services.

Every function takes a read cursor (from `Store.read`). Conditions are SQL over the `logs` table; tag
matches read the attributes' and resource's JSON text by JSON pointer; a trace's records are found by
their `trace_key` (an integer column, quick to scan), then checked against the whole id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import duckdb

from boutique.observatory.logs.model import severity_name
from boutique.observatory.logs.table import trace_key

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_COLUMNS = (
    "time_us, observed_us, service, instance, severity, severity_text, body, attributes, resource, scope, "
    "trace_id, span_id"
)


@dataclass(frozen=True)
class LogQuery:
    """Records meeting every condition given (None: any), newest first, at most `limit`."""

    service: str | None = None
    min_severity: int | None = None  # an OTLP SeverityNumber
    text: str | None = None  # a substring of the body, any case
    tags: tuple[tuple[str, str], ...] = ()  # (key, value as text): an attribute or resource attribute
    trace_id: bytes | None = None  # 16 bytes
    span_id: bytes | None = None  # 8 bytes
    start_us: int | None = None
    end_us: int | None = None
    limit: int = DEFAULT_LIMIT


def json_pointer(key: str) -> str:
    """The JSON pointer (RFC 6901) to a top-level key: any key, dots and slashes included."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def conditions(query: LogQuery, *extra: str) -> tuple[str, list[Any]]:
    """The `FROM ... WHERE ...` of the query's records (and the `extra` conditions) and its parameters
    (those of `extra` go after them)."""
    where: list[str] = []
    params: list[Any] = []

    def given(condition: str, value: Any) -> None:
        """Add a one-parameter condition when its value is given."""
        if value is not None:
            where.append(condition)
            params.append(value)

    if query.trace_id is not None:
        where.append("trace_key = ? AND trace_id = ?")
        params += [trace_key(query.trace_id), query.trace_id]
    given("span_id = ?", query.span_id)
    given("service = ?", query.service)
    given("severity >= ?", query.min_severity)
    if query.text is not None:
        where.append("body ILIKE ? ESCAPE '\\'")
        params.append("%" + re.sub(r"([%_\\])", r"\\\1", query.text) + "%")
    for key, value in query.tags:
        pointer = json_pointer(key)
        where.append(
            "(coalesce(json_extract_string(attributes, ?) = ?, false)"
            " OR coalesce(json_extract_string(resource, ?) = ?, false))"
        )
        params += [pointer, value, pointer, value]
    given("time_us >= ?", query.start_us)
    given("time_us <= ?", query.end_us)
    where += extra
    return "FROM logs" + (f" WHERE {' AND '.join(where)}" if where else ""), params


def record(row: tuple[Any, ...]) -> dict[str, Any]:
    """One stored row as the API's record (times in µs, ids as lower-case hex, "" when absent)."""
    (
        time_us,
        observed_us,
        service,
        instance,
        number,
        text,
        body,
        attributes,
        resource,
        scope,
        trace,
        span,
    ) = row
    return {
        "time": int(time_us),
        "observedTime": int(observed_us),
        "service": service,
        "instance": instance,
        "severity": severity_name(int(number)) or text,
        "severityNumber": int(number),
        "body": body,
        "attributes": json.loads(attributes),
        "resource": json.loads(resource),
        "scope": scope,
        "traceID": bytes(trace).hex(),
        "spanID": bytes(span).hex(),
    }


def find(cursor: duckdb.DuckDBPyConnection, query: LogQuery) -> list[dict[str, Any]]:
    """The records meeting the query, newest first."""
    source, params = conditions(query)
    rows = cursor.execute(
        f"SELECT {_COLUMNS} {source} ORDER BY time_us DESC, stored_seq DESC LIMIT ?",
        [*params, query.limit],
    ).fetchall()
    return [record(row) for row in rows]


def last_stored(cursor: duckdb.DuckDBPyConnection, after: int = 0) -> int:
    """The commit number of the newest stored records (`after` when none is newer)."""
    row = cursor.execute("SELECT max(stored_seq) FROM logs WHERE stored_seq > ?", [after]).fetchall()
    return int(row[0][0]) if row and row[0][0] is not None else after


def stored_since(
    cursor: duckdb.DuckDBPyConnection, query: LogQuery, after: int
) -> tuple[list[dict[str, Any]], int, int]:
    """Records meeting the query stored after commit `after`, in time order; the commit number they run to,
    and how many more there were beyond `query.limit` (the newest are kept).

    Commits are numbered in the order they happen, so every record up to the number returned is there
    to be read: the next call, from that number, misses none.
    """
    upto = last_stored(cursor, after)
    if upto == after:
        return [], after, 0
    source, params = conditions(query, "stored_seq > ?", "stored_seq <= ?")
    rows = cursor.execute(
        f"SELECT {_COLUMNS}, count(*) OVER () {source} ORDER BY time_us DESC, stored_seq DESC LIMIT ?",
        [*params, after, upto, query.limit],
    ).fetchall()
    more = int(rows[0][-1]) - len(rows) if rows else 0
    return [record(row[:-1]) for row in reversed(rows)], upto, more


def services(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    """Every service with stored records, sorted."""
    return [row[0] for row in cursor.execute("SELECT DISTINCT service FROM logs ORDER BY 1").fetchall()]
