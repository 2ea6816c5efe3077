"""The trace search of Jaeger's api/v3 HTTP gateway, read the way Jaeger's Go gateway reads it.

Followed: jaegertracing/jaeger `cmd/jaeger/internal/extension/jaegerquery/internal/apiv3/query_parser.go`
at commit b9335806f84bad9f284b6e0213a5a887892cb105 (the parser `/api/v3/traces` and `/api/v3/trace-summaries`
share). Each parameter has a canonical camelCase name and a snake_case alias; the canonical one wins when
both are given, and an empty value counts as absent:

- `query.serviceName` / `query.service_name`, `query.operationName` / `query.operation_name`
- `query.attributes`: a JSON object of strings (`{"http.status_code":"500"}`), matched exactly
- `query.startTimeMin` / `query.start_time_min`, `query.startTimeMax` / `query.start_time_max`: required,
  RFC 3339 with an optional fraction of any length; the minimum is inclusive, the maximum exclusive
- `query.searchDepth` / `query.search_depth`, then `query.num_traces`: a decimal integer, default 100
- `query.durationMin` / `query.duration_min`, `query.durationMax` / `query.duration_max`: Go durations
- `query.rawTraces` / `query.raw_traces`: a Go boolean (parsed and checked; it changes nothing here)

Errors read as Jaeger's do (`malformed parameter <name as sent>: <Go's own error text>`). Where Jaeger's
storage decides, the observatory answers as Jaeger's in-memory storage does: a search depth outside
1..MAX_LIMIT is refused, with that storage's message, as a bad request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams

from boutique.observatory.api.params import MAX_LIMIT, NS_PER_UNIT
from boutique.observatory.store.base import TagCondition, TraceQuery

DEFAULT_SEARCH_DEPTH = 100
RFC3339_NANO = "2006-01-02T15:04:05.999999999Z07:00"  # Go's layout, quoted in its parse errors
SEARCH_DEPTH_RANGE = "search depth must be greater than 0 and less than max traces"
_INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]*")
_JSON_KINDS = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}


class V3QueryError(ValueError):
    """A search the gateway refuses (400); the message is the whole error text."""


@dataclass(frozen=True)
class V3Search:
    """A parsed api/v3 trace search: the store query and the request's own times in nanoseconds."""

    query: TraceQuery
    start_time_min_ns: int
    start_time_max_ns: int
    raw_traces: bool = False


def go_quote(text: str) -> str:
    """`text` in double quotes the way Go's error messages quote it (escapes for quotes and controls)."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def resolve(params: QueryParams, canonical: str, *aliases: str) -> tuple[str, str]:
    """The first non-empty value among the names, and the name it came under (else "", the last alias)."""
    for name in (canonical, *aliases):
        value = params.get(name, "")
        if value:
            return value, name
    return "", aliases[-1] if aliases else canonical


# ---- Go's scalar parsers -----------------------------------------------------------------------


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, including 0)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days_in(month: int, year: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_rfc3339_ns(name: str, value: str) -> int:
    """`time.Parse(time.RFC3339Nano, value)` as Unix nanoseconds; V3QueryError with Go's wording."""
    rest = value

    def bad(element: str) -> V3QueryError:
        return V3QueryError(
            f"malformed parameter {name}: parsing time {go_quote(value)} as {go_quote(RFC3339_NANO)}: "
            f"cannot parse {go_quote(rest)} as {go_quote(element)}"
        )

    def out_of_range(what: str) -> V3QueryError:
        return V3QueryError(
            f"malformed parameter {name}: parsing time {go_quote(value)}: {what} out of range"
        )

    def number(element: str, width: int, flexible: bool = False) -> int:
        nonlocal rest
        digits = _DIGITS.match(rest)
        count = len(digits.group()) if digits else 0
        if count < width and not (flexible and count >= 1):
            raise bad(element)
        taken = rest[: width if count >= width else count]
        rest = rest[len(taken) :]
        return int(taken)

    def literal(text: str) -> None:
        nonlocal rest
        if not rest.startswith(text):
            raise bad(text)
        rest = rest[len(text) :]

    year = number("2006", 4)
    literal("-")
    month = number("01", 2)
    if not 1 <= month <= 12:
        raise out_of_range("month")
    literal("-")
    day = number("02", 2)
    literal("T")
    hour = number("15", 2, flexible=True)
    if hour >= 24:
        raise out_of_range("hour")
    literal(":")
    minute = number("04", 2)
    if minute >= 60:
        raise out_of_range("minute")
    literal(":")
    second = number("05", 2)
    if second >= 60:
        raise out_of_range("second")
    nanos = 0
    if len(rest) >= 2 and rest[0] in ".," and rest[1].isdigit() and rest[1].isascii():
        fraction = _DIGITS.match(rest, 1)
        assert fraction is not None
        digits = fraction.group()
        nanos = int(digits[:9].ljust(9, "0"))
        rest = rest[1 + len(digits) :]
    offset = 0
    if rest.startswith("Z"):
        rest = rest[1:]
    else:
        sign = rest[:1]
        if len(rest) < 6 or rest[3] != ":" or sign not in ("+", "-"):
            raise bad("Z07:00")
        if not (rest[1:3].isdigit() and rest[4:6].isdigit() and rest[1:3].isascii() and rest[4:6].isascii()):
            raise bad("Z07:00")
        zone_hours, zone_minutes = int(rest[1:3]), int(rest[4:6])
        if zone_hours > 24:
            raise out_of_range("time zone offset hour")
        if zone_minutes > 60:
            raise out_of_range("time zone offset minute")
        offset = (zone_hours * 3600 + zone_minutes * 60) * (-1 if sign == "-" else 1)
        rest = rest[6:]
    if rest:
        raise V3QueryError(
            f"malformed parameter {name}: parsing time {go_quote(value)}: extra text: {go_quote(rest)}"
        )
    if not 1 <= day <= _days_in(month, year):
        raise V3QueryError(f"malformed parameter {name}: parsing time {go_quote(value)}: day out of range")
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * 1_000_000_000 + nanos


def parse_go_duration_ns(name: str, value: str) -> int:
    """`time.ParseDuration(value)` in nanoseconds (negative allowed); V3QueryError with Go's wording."""

    def error(reason: str) -> V3QueryError:
        return V3QueryError(f"malformed parameter {name}: time: {reason}")

    invalid = error(f"invalid duration {go_quote(value)}")
    rest = value
    negative = False
    if rest[:1] in ("-", "+") and rest:
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        if not (rest[0] == "." or ("0" <= rest[0] <= "9")):
            raise invalid
        whole = _DIGITS.match(rest)
        assert whole is not None
        integer_digits = whole.group()
        rest = rest[len(integer_digits) :]
        fraction_digits = ""
        if rest.startswith("."):
            fraction = _DIGITS.match(rest, 1)
            assert fraction is not None
            fraction_digits = fraction.group()
            rest = rest[1 + len(fraction_digits) :]
        if not integer_digits and not fraction_digits:
            raise invalid
        unit_end = 0
        while unit_end < len(rest) and rest[unit_end] != "." and not ("0" <= rest[unit_end] <= "9"):
            unit_end += 1
        unit, rest = rest[:unit_end], rest[unit_end:]
        if not unit:
            raise error(f"missing unit in duration {go_quote(value)}")
        if unit not in NS_PER_UNIT:
            raise error(f"unknown unit {go_quote(unit)} in duration {go_quote(value)}")
        scale = NS_PER_UNIT[unit]
        whole_part = int(integer_digits or "0")
        if whole_part > _INT64_MAX // scale:
            raise invalid
        part = whole_part * scale
        if fraction_digits:
            part += int(int(fraction_digits) * scale / 10 ** len(fraction_digits))
        total += part
        if total > _INT64_MAX:
            raise invalid
    return -total if negative else total


def parse_go_atoi(name: str, value: str) -> int:
    """`strconv.Atoi(value)` (64-bit int, optional sign, digits only); V3QueryError with Go's wording."""
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise V3QueryError(
            f"malformed parameter {name}: strconv.Atoi: parsing {go_quote(value)}: invalid syntax"
        )
    number = int(value)
    if not -(2**63) <= number <= _INT64_MAX:
        raise V3QueryError(
            f"malformed parameter {name}: strconv.Atoi: parsing {go_quote(value)}: value out of range"
        )
    return number


def parse_go_bool(name: str, value: str) -> bool:
    """`strconv.ParseBool(value)`: 1, t, T, TRUE, true, True and their false forms."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise V3QueryError(
        f"malformed parameter {name}: strconv.ParseBool: parsing {go_quote(value)}: invalid syntax"
    )


def _refuse_constant(text: str) -> Any:
    """Go's JSON has no NaN or Infinity: refuse them where Python's decoder would take them."""
    raise ValueError(f"invalid character {text[0]!r} looking for beginning of value")


def _json_syntax_reason(exc: json.JSONDecodeError) -> str:
    """Go's wording for the common JSON syntax errors."""
    if exc.pos >= len(exc.doc):
        return "unexpected end of JSON input"
    char = exc.doc[exc.pos]
    context = {
        "Expecting value": "looking for beginning of value",
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair",
        "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
        "Extra data": "after top-level value",
    }.get(exc.msg, "in string literal")
    return f"invalid character {char!r} {context}"


def parse_attributes(name: str, value: str) -> dict[str, str]:
    """`json.Unmarshal` into Go's map[string]string: an object of strings (null is no attributes)."""
    try:
        decoded = json.loads(value, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise V3QueryError(f"malformed parameter {name}: {_json_syntax_reason(exc)}") from None
    except ValueError as exc:
        raise V3QueryError(f"malformed parameter {name}: {exc}") from None
    if decoded is None:
        return {}
    if not isinstance(decoded, dict):
        kind = _JSON_KINDS.get(type(decoded), "value")
        go_type = "map[string]string"
        raise V3QueryError(
            f"malformed parameter {name}: json: cannot unmarshal {kind} into Go value of type {go_type}"
        )
    attributes: dict[str, str] = {}
    for key, wanted in decoded.items():
        if wanted is not None and not isinstance(wanted, str):
            kind = _JSON_KINDS.get(type(wanted), "value")
            raise V3QueryError(
                f"malformed parameter {name}: json: cannot unmarshal {kind} into Go value of type string"
            )
        attributes[key] = wanted or ""
    return attributes


# ---- the whole search --------------------------------------------------------------------------


def parse_v3_search(params: QueryParams) -> V3Search:
    """The search of `GET /api/v3/traces` and `/api/v3/trace-summaries`, checked in Jaeger's order."""
    service, _ = resolve(params, "query.serviceName", "query.service_name")
    operation, _ = resolve(params, "query.operationName", "query.operation_name")
    attributes_text = params.get("query.attributes", "")
    attributes = parse_attributes("query.attributes", attributes_text) if attributes_text else {}

    low_text, low_name = resolve(params, "query.startTimeMin", "query.start_time_min")
    high_text, high_name = resolve(params, "query.startTimeMax", "query.start_time_max")
    if not low_text or not high_text:
        raise V3QueryError("query.startTimeMin and query.startTimeMax are required")
    low_ns = parse_rfc3339_ns(low_name, low_text)
    high_ns = parse_rfc3339_ns(high_name, high_text)
    if not low_ns < high_ns:
        raise V3QueryError("query.startTimeMin must be before query.startTimeMax")

    depth_text, depth_name = resolve(params, "query.searchDepth", "query.search_depth", "query.num_traces")
    depth = parse_go_atoi(depth_name, depth_text) if depth_text else DEFAULT_SEARCH_DEPTH

    duration_min_text, duration_min_name = resolve(params, "query.durationMin", "query.duration_min")
    duration_min = parse_go_duration_ns(duration_min_name, duration_min_text) if duration_min_text else 0
    duration_max_text, duration_max_name = resolve(params, "query.durationMax", "query.duration_max")
    duration_max = parse_go_duration_ns(duration_max_name, duration_max_text) if duration_max_text else 0
    raw_text, raw_name = resolve(params, "query.rawTraces", "query.raw_traces")
    raw = parse_go_bool(raw_name, raw_text) if raw_text else False

    if not 0 < depth <= MAX_LIMIT:
        raise V3QueryError(SEARCH_DEPTH_RANGE)
    query = TraceQuery(
        service=service or None,
        operation=operation or None,
        tags=tuple(TagCondition(key, "=", wanted) for key, wanted in attributes.items()),
        # The store keeps microseconds: a span qualifies when its nanosecond figure would.
        min_duration_us=-(-duration_min // 1000) if duration_min > 0 else None,
        max_duration_us=duration_max // 1000 if duration_max != 0 else None,
        start_us=-(-low_ns // 1000),
        end_us=-(-high_ns // 1000) - 1,  # start_time_max is exclusive
        limit=depth,
    )
    return V3Search(query, low_ns, high_ns, raw)
