"""Query parameters of the observatory's HTTP APIs, parsed and checked; a bad one is a `ParamError` (400).

Trace search, `GET /api/traces`, takes Jaeger's parameters plus some of the observatory's own:

- `service`, `operation`: both optional; without a service every service is searched.
- `tags`: a JSON object `{"key": "value", ...}`; every pair must match exactly (Jaeger UI, Grafana).
- `tag=key:value`, repeatable: the same in Jaeger's older form (split at the first colon).
- `tagQuery=EXPR`, repeatable, where EXPR is one of
  `key=value` (equal), `key!=value` (the key is present with another value),
  `key^=text` (the value starts with text), `key~=regex` (the value matches the Python regular
  expression anywhere). The operator is the first `=` with the character before it.
- `minDuration`, `maxDuration`: Go durations such as `1.5ms`, `200us`, `2s`, `1m`, `1h30m`.
- `start`, `end`: Unix microseconds. `lookback` (a duration; `d` and `w` allowed, e.g. `2d`) sets the
  start from the end (or now) when `start` is absent; `custom` means "use start and end". With no
  start and no lookback the search has no lower time bound.
- `limit`: traces returned, default 100, at most 1500 (0 means the default).
- `errors=true`: only traces with an error span; `instance=ID`: spans of one service instance;
  `spanKind=server|client|producer|consumer|internal|unspecified`;
  `sortBy=start|duration`: newest first (default) or longest first.
- `traceID`, repeatable: return these traces instead of searching.

Every condition applies to one span: a trace matches when one of its spans meets them all.
The Jaeger v1 and Zipkin APIs answer a bad parameter with the Jaeger error envelope (`error_response`),
naming the parameter and why; api/v3 answers with its own `{"error": {"httpCode", "message"}}` shape.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal

from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse

from boutique.observatory.model import KIND_NUMBERS
from boutique.observatory.store.base import TagCondition, TagOp, TraceQuery, tag_text

DEFAULT_LIMIT = 100
MAX_LIMIT = 1500
MAX_NUMBER = 2**53  # larger times and durations are mistakes (and would overflow once scaled to µs)

NS_PER_UNIT = {  # Go's time.ParseDuration units, as Jaeger parses durations
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_LONG_UNITS = {"d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-z\u00b5\u03bc]+)")
_HEX = re.compile(r"[0-9a-fA-F]{1,32}")
_TAG_QUERY_OPS: dict[str, TagOp] = {"!": "!=", "^": "prefix", "~": "regex"}


class ParamError(ValueError):
    """A query parameter that cannot be used: the message names the parameter and says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"parameter '{name}': {reason}")
        self.name = name
        self.reason = reason


def envelope(data: Any, total: int | None = None) -> dict[str, Any]:
    """The Jaeger v1 response envelope around `data`."""
    if total is None:
        total = len(data) if isinstance(data, list) else 0
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": None}


def error_response(status: int, message: str) -> JSONResponse:
    """The Jaeger v1 error envelope with one error, at the given HTTP status."""
    body = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status, "msg": message}]}
    return JSONResponse(body, status_code=status)


def text(params: QueryParams, name: str) -> str | None:
    """A parameter's value, None when absent or empty (clients send empty values for "any")."""
    value = params.get(name)
    return value if value else None


def values(params: QueryParams, name: str) -> list[str]:
    """Every non-empty value of a repeatable parameter."""
    return [v for v in params.getlist(name) if v]


# ---- scalars -----------------------------------------------------------------------------------


def parse_duration_us(name: str, value: str, long_units: bool = False) -> int:
    """A non-negative Go-style duration (`1.5ms`, `2h45m`, `0`) in microseconds (rounded down)."""
    raw = value.strip()
    body = raw[1:] if raw.startswith("+") else raw
    if body == "0":
        return 0
    if body.startswith("-"):
        raise ParamError(name, f"duration must not be negative, got {value!r}")
    units = {**NS_PER_UNIT, **_LONG_UNITS} if long_units else NS_PER_UNIT
    total, position = Fraction(0), 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position or match.group(2) not in units:
            break
        total += Fraction(match.group(1)) * units[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        allowed = ", ".join(u for u in units if u.isascii())
        raise ParamError(name, f"not a duration like 1.5ms, 200us or 2s (units {allowed}): {value!r}")
    if total // 1000 > MAX_NUMBER:
        raise ParamError(name, f"duration too long: {value!r}")
    return int(total // 1000)


def parse_int(name: str, value: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """A decimal integer within optional bounds."""
    try:
        number = int(value.strip())
    except ValueError:
        raise ParamError(name, f"not an integer: {value!r}") from None
    if minimum is not None and number < minimum:
        raise ParamError(name, f"must be at least {minimum}, got {number}")
    maximum = MAX_NUMBER if maximum is None else maximum
    if number > maximum or number < -MAX_NUMBER:
        raise ParamError(name, f"must be at most {maximum}, got {number}")
    return number


def parse_float(name: str, value: str) -> float:
    """A finite decimal number."""
    try:
        number = float(value.strip())
    except ValueError:
        raise ParamError(name, f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ParamError(name, f"not a finite number: {value!r}")
    return number


def parse_bool(name: str, value: str) -> bool:
    """`true`/`false` (also 1/0, yes/no), case-insensitive."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ParamError(name, f"must be true or false, got {value!r}")


def parse_limit(name: str, value: str | None, default: int = DEFAULT_LIMIT) -> int:
    """A result limit: absent or 0 gives the default, above `MAX_LIMIT` is capped."""
    if value is None:
        return default
    number = parse_int(name, value, minimum=0)
    return min(number, MAX_LIMIT) if number else default


def parse_trace_id(name: str, value: str) -> bytes:
    """A trace id of 1 to 32 hex digits, left-padded with zeros to 16 bytes."""
    if not _HEX.fullmatch(value):
        raise ParamError(name, f"a trace id is 1 to 32 hexadecimal digits, got {value!r}")
    return bytes.fromhex(value.rjust(32, "0"))


def parse_span_kind(name: str, value: str) -> int:
    """A span kind name (`server`, `client`, ..., also `SPAN_KIND_SERVER`) as its OTLP number."""
    lowered = value.strip().lower().removeprefix("span_kind_")
    if lowered not in KIND_NUMBERS:
        raise ParamError(name, f"unknown span kind {value!r}; one of {', '.join(KIND_NUMBERS)}")
    return KIND_NUMBERS[lowered]


def parse_rfc3339_us(name: str, value: str) -> int:
    """An RFC 3339 time (`2024-05-01T12:00:00.5Z`, any offset) as Unix microseconds."""
    raw = value.strip()
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", raw)
    if not match:
        raise ParamError(name, f"not an RFC 3339 time like 2024-05-01T12:00:00Z: {value!r}")
    zone = "+00:00" if match.group(3) in ("Z", "z") else match.group(3)
    try:
        moment = datetime.fromisoformat(match.group(1).replace("t", "T").replace(" ", "T") + zone)
    except ValueError as exc:
        raise ParamError(name, f"not a valid time: {exc}") from None
    fraction = (match.group(2) or "").ljust(9, "0")[:9]
    seconds = int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return seconds * 1_000_000 + int(fraction) // 1000


def rfc3339(timestamp_us: int) -> str:
    """Unix microseconds as an RFC 3339 UTC time (fraction only when not whole seconds)."""
    seconds, micros = divmod(timestamp_us, 1_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if micros == 0:
        return stamp + "Z"
    if micros % 1000 == 0:
        return f"{stamp}.{micros // 1000:03d}Z"
    return f"{stamp}.{micros:06d}Z"


# ---- tag conditions ----------------------------------------------------------------------------


def condition(name: str, key: str, op: TagOp, value: str) -> TagCondition:
    """A tag condition, with an invalid one (an empty key, a bad regex) reported against `name`."""
    if not key:
        raise ParamError(name, "a tag condition needs a key")
    try:
        return TagCondition(key, op, value)
    except ValueError as exc:
        raise ParamError(name, str(exc)) from None


def parse_tags_json(name: str, value: str) -> list[TagCondition]:
    """A JSON object of exact matches; values may be strings, numbers or booleans."""
    try:
        decoded = json.loads(value)
    except ValueError as exc:
        raise ParamError(name, f"not valid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise ParamError(name, 'must be a JSON object like {"http.method": "GET"}')
    found = []
    for key, wanted in decoded.items():
        if not isinstance(wanted, str | int | float | bool):
            raise ParamError(name, f"the value of {key!r} must be a string, number or boolean")
        found.append(condition(name, key, "=", tag_text(wanted)))
    return found


def parse_tag_pair(name: str, value: str) -> TagCondition:
    """Jaeger's `key:value` exact match (split at the first colon)."""
    key, colon, wanted = value.partition(":")
    if not colon:
        raise ParamError(name, f"expected key:value, got {value!r}")
    return condition(name, key.strip(), "=", wanted)


def parse_tag_query(name: str, value: str) -> TagCondition:
    """One `key=value`, `key!=value`, `key^=prefix` or `key~=regex` expression."""
    at = value.find("=")
    if at < 0:
        raise ParamError(name, f"expected key=value, key!=value, key^=prefix or key~=regex, got {value!r}")
    op: TagOp = "="
    key_end = at
    if at > 0 and value[at - 1] in _TAG_QUERY_OPS:
        op = _TAG_QUERY_OPS[value[at - 1]]
        key_end = at - 1
    return condition(name, value[:key_end].strip(), op, value[at + 1 :])


# ---- whole queries -----------------------------------------------------------------------------


def _window(
    params: QueryParams, start_name: str, end_name: str, unit_us: int, now_us: int
) -> tuple[int | None, int | None]:
    """start/end given in `unit_us` microseconds, with `lookback` filling in a missing start."""
    start_text, end_text = text(params, start_name), text(params, end_name)
    start = parse_int(start_name, start_text, minimum=0) * unit_us if start_text else None
    end = parse_int(end_name, end_text, minimum=0) * unit_us if end_text else None
    lookback = text(params, "lookback")
    if start is None and lookback and lookback != "custom":
        start = max(0, (end if end is not None else now_us) - parse_duration_us("lookback", lookback, True))
    if start is not None and end is not None and start > end:
        raise ParamError(start_name, f"must not be after '{end_name}'")
    return start, end


def _durations(
    params: QueryParams, min_name: str, max_name: str, parse: Callable[[str, str], int]
) -> tuple[int | None, int | None]:
    low_text, high_text = text(params, min_name), text(params, max_name)
    low = parse(min_name, low_text) if low_text else None
    high = parse(max_name, high_text) if high_text else None
    if low is not None and high is not None and high < low:
        raise ParamError(max_name, f"must not be less than '{min_name}'")
    return low, high


def jaeger_trace_query(params: QueryParams, now_us: int) -> TraceQuery:
    """The search of `GET /api/traces` (see the module docstring for every parameter)."""
    tags: list[TagCondition] = []
    tags_json = text(params, "tags")
    if tags_json:
        tags.extend(parse_tags_json("tags", tags_json))
    tags.extend(parse_tag_pair("tag", v) for v in values(params, "tag"))
    tags.extend(parse_tag_query("tagQuery", v) for v in values(params, "tagQuery"))
    low, high = _durations(params, "minDuration", "maxDuration", parse_duration_us)
    start, end = _window(params, "start", "end", 1, now_us)
    errors = text(params, "errors")
    kind = text(params, "spanKind")
    order = text(params, "sortBy") or "start"
    if order not in ("start", "duration"):
        raise ParamError("sortBy", f"must be start or duration, got {order!r}")
    sort: Literal["start", "duration"] = "duration" if order == "duration" else "start"
    return TraceQuery(
        service=text(params, "service"),
        operation=text(params, "operation"),
        span_kind=parse_span_kind("spanKind", kind) if kind else None,
        tags=tuple(tags),
        min_duration_us=low,
        max_duration_us=high,
        start_us=start,
        end_us=end,
        limit=parse_limit("limit", text(params, "limit")),
        errors_only=parse_bool("errors", errors) if errors else False,
        instance=text(params, "instance"),
        order=sort,
    )


def zipkin_annotation_query(name: str, value: str) -> tuple[list[TagCondition], bool]:
    """Zipkin's `error and http.method=GET`: tag conditions, and whether `error` alone asked for errors."""
    conditions: list[TagCondition] = []
    errors_only = False
    for term in (t.strip() for t in re.split(r"\s+and\s+", value.strip())):
        if not term:
            raise ParamError(name, f"empty term in {value!r}")
        key, equals, wanted = term.partition("=")
        if not equals and key == "error":
            errors_only = True
        elif equals:
            conditions.append(condition(name, key.strip(), "=", wanted.strip()))
        else:
            conditions.append(condition(name, key, "regex", ""))  # the key with any value
    return conditions, errors_only


def _micros(name: str, value: str) -> int:
    return parse_int(name, value, minimum=0)


def zipkin_trace_query(params: QueryParams, now_us: int) -> TraceQuery:
    """The search of Zipkin's `GET /api/v2/traces` (times in ms, durations in µs, limit default 10)."""
    end_text = text(params, "endTs")
    end = parse_int("endTs", end_text, minimum=0) * 1000 if end_text else now_us
    lookback_text = text(params, "lookback")
    lookback = parse_int("lookback", lookback_text, minimum=0) * 1000 if lookback_text else 86_400_000_000
    low, high = _durations(params, "minDuration", "maxDuration", _micros)
    annotation = text(params, "annotationQuery")
    tags, errors_only = zipkin_annotation_query("annotationQuery", annotation) if annotation else ([], False)
    span_name = text(params, "spanName")
    return TraceQuery(
        service=text(params, "serviceName"),
        operation=None if span_name in (None, "all") else span_name,
        tags=tuple(tags),
        min_duration_us=low,
        max_duration_us=high,
        start_us=max(0, end - lookback),
        end_us=end,
        limit=parse_limit("limit", text(params, "limit"), default=10),
        errors_only=errors_only,
    )


def v3_trace_query(params: QueryParams) -> TraceQuery:
    """The search of Jaeger's `GET /api/v3/traces` (RFC 3339 times, Go durations, attributes as JSON)."""
    start_text, end_text = text(params, "query.start_time_min"), text(params, "query.start_time_max")
    start = parse_rfc3339_us("query.start_time_min", start_text) if start_text else None
    end = parse_rfc3339_us("query.start_time_max", end_text) if end_text else None
    if start is not None and end is not None and start > end:
        raise ParamError("query.start_time_min", "must not be after 'query.start_time_max'")
    low, high = _durations(params, "query.duration_min", "query.duration_max", parse_duration_us)
    attributes = text(params, "query.attributes")
    depth_name = "query.search_depth" if text(params, "query.search_depth") else "query.num_traces"
    return TraceQuery(
        service=text(params, "query.service_name"),
        operation=text(params, "query.operation_name"),
        tags=tuple(parse_tags_json("query.attributes", attributes)) if attributes else (),
        min_duration_us=low,
        max_duration_us=high,
        start_us=start,
        end_us=end,
        limit=parse_limit(depth_name, text(params, depth_name)),
    )


def trace_ids(name: str, given: Iterable[str]) -> list[bytes]:
    """Several trace ids (each value may itself be a comma-separated list), duplicates dropped."""
    found: dict[bytes, None] = {}
    for value in given:
        for part in value.split(","):
            if part.strip():
                found[parse_trace_id(name, part.strip())] = None
    return list(found)
