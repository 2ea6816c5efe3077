"""Pyroscope's ingest on the query port: `POST /ingest` and the push API, so Pyroscope clients send here.

`POST /ingest?name=app.cpu{k=v}&from=&until=&format=&sampleRate=&spyName=` (what pyroscope-io 0.8
sends, as pprof): the service is the name before its type suffix (`app.cpu` → "app", type "cpu"; a
name ending in no known profile type is all service, type "cpu"), or the `service_name` label when
there is one; the labels in braces and `spyName` go to every row's labels. `format` is `folded`
(default: `a;b;c 12` lines), `lines` (one sample a line) or `pprof` (the raw body, gzipped or not, or
the `profile` field of a multipart/form-data body). Counts of samples become nanoseconds at
`sampleRate` samples a second (default 100); pprof values are read as `profiles.pprof_in` says. Rows
take the time `from` (Unix seconds, or ms, µs or ns told apart by magnitude; default now).

`POST /push.v1.PusherService/Push` (Connect unary, `application/proto` or JSON: what pyroscope-io 1.x
sends): each series' pprof profiles, the service its `service_name` label, its other labels (but
Pyroscope's own `__name__` and the like) the rows' labels, the time the profile's own.

Both go the way of the OTLP receivers (`receivers.http.ingest`): the body limit (413), gzip, 400 with
one line saying what is wrong and nothing stored, 429 / 503 with `Retry-After` when the pipeline is full
or the store failing, and the answer once the rows are stored (200, an empty body; `PushResponse`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.pipeline import Pipeline

# Modules, not names: `profiles.decode` imports this package, which imports this module.
from boutique.observatory.profiles import decode, folded, pprof_in
from boutique.observatory.profiles.model import NANOSECONDS, ProfileBatch, ProfileResource
from boutique.observatory.profiles.push_pb2 import PushRequest, PushResponse
from boutique.observatory.receivers.base import HttpReceiver, Limits
from boutique.observatory.receivers.http import JSON, Refused, ingest, media_type, retry_headers
from boutique.observatory.receivers.otlp_proto import UNKNOWN_SERVICE, PayloadError

INGEST_PATH = "/ingest"
PUSH_PATH = "/push.v1.PusherService/Push"
CONNECT_PROTO = "application/proto"
FORMATS = ("folded", "lines", "pprof")
DEFAULT_SAMPLE_RATE = 100  # samples a second, as Pyroscope's clients default
SERVICE_LABEL = "service_name"
SPY_LABEL = "spyName"
# The profile types Pyroscope clients put after the application name (`app.cpu`), and their units
# ("" for a count of samples, turned into nanoseconds at the sample rate).
TYPE_UNITS = {
    "cpu": "",
    "wall": "",
    "itimer": "",
    "alloc_objects": "count",
    "alloc_space": "bytes",
    "inuse_objects": "count",
    "inuse_space": "bytes",
    "alloc_samples": "count",
    "alloc_size": "bytes",
    "goroutines": "count",
    "exceptions": "count",
    "mutex_count": "count",
    "mutex_duration": NANOSECONDS,
    "block_count": "count",
    "block_duration": NANOSECONDS,
    "lock_count": "count",
    "lock_duration": NANOSECONDS,
}
# The Content-Types `/ingest` is sent with (any is taken: the format parameter says what the body is).
INGEST_TYPES = ("", "text/plain", "application/octet-stream", "binary/octet-stream", "multipart/form-data")
_NAME = re.compile(r"^([^{}]*)(?:\{([^{}]*)\})?$")
# Connect's error codes of the statuses `ingest` answers with.
_CONNECT_CODES = {
    400: "invalid_argument",
    413: "resource_exhausted",
    429: "resource_exhausted",
    503: "unavailable",
}


@dataclass(frozen=True)
class IngestParams:
    """What an `/ingest` request's query string says."""

    service: str
    type: str  # "" when the name carries no type
    labels: dict[str, Any]
    from_ns: int
    format: str
    sample_rate: int


def ingest_params(query: Mapping[str, str], now_ns: int) -> IngestParams:
    """The parameters of an `/ingest` request; `PayloadError` with the one that is wrong."""
    service, kind, labels = parse_name(query.get("name", ""))
    form = query.get("format", "") or "folded"
    if form not in FORMATS:
        raise PayloadError(f"format {form[:40]!r} is not supported (use {', '.join(FORMATS)})")
    rate_text = query.get("sampleRate", "") or str(DEFAULT_SAMPLE_RATE)
    if not (rate_text.isascii() and rate_text.isdigit()) or not 1 <= int(rate_text) <= 1_000_000_000:
        raise PayloadError(f"sampleRate must be a whole number of samples a second, not {rate_text[:40]!r}")
    start = unix_ns(query["from"], "from") if query.get("from") else now_ns
    end = unix_ns(query["until"], "until") if query.get("until") else start
    if end < start:
        raise PayloadError("until is before from")
    if query.get("spyName"):
        labels[SPY_LABEL] = query["spyName"]
    return IngestParams(service, kind, labels, start, form, int(rate_text))


def parse_name(name: str) -> tuple[str, str, dict[str, Any]]:
    """(service, type or "", labels) of a Pyroscope application name `app.cpu{k=v,...}`."""
    found = _NAME.match(name.strip())
    if not name.strip() or found is None:
        raise PayloadError(f"name must be an application name like app.cpu{{key=value}}, not {name[:80]!r}")
    base, pairs = found.group(1).strip(), found.group(2) or ""
    labels: dict[str, Any] = {}
    for pair in pairs.split(","):
        if not pair.strip():
            continue
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise PayloadError(f"name label {pair.strip()[:40]!r} is not key=value")
        labels[key.strip()] = value.strip()
    prefix, dot, suffix = base.rpartition(".")
    service, kind = (prefix, suffix) if dot and suffix in TYPE_UNITS else (base, "")
    service = str(labels.pop(SERVICE_LABEL, "") or service)
    if not service:
        raise PayloadError(f"name {name[:80]!r} names no application")
    return service, kind, labels


def unix_ns(text: str, what: str) -> int:
    """A Unix time in seconds, ms, µs or ns (told apart by magnitude, as Pyroscope does) in ns."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise PayloadError(f"{what} must be a Unix time in s, ms, µs or ns, not {text[:40]!r}")
    value = int(text)
    for below, scale in ((10**10, 10**9), (10**13, 10**6), (10**16, 10**3)):
        if value < below:
            return value * scale
    return value


class _Rows:
    """A batch being built: rows of the same stack, thread, labels, type and time summed."""

    def __init__(self) -> None:
        self.batch = ProfileBatch()
        self._rows: dict[tuple[Any, ...], int] = {}
        self._resources: dict[str, int] = {}

    def resource(self, service: str) -> int:
        if service not in self._resources:
            self._resources[service] = len(self.batch.resources)
            attributes = _json({"service.name": service})
            self.batch.resources.append(ProfileResource(service, "", attributes))
        return self._resources[service]

    def add(
        self,
        resource: int,
        time_ns: int,
        named: tuple[str, str],
        frames: tuple[str, ...],
        thread: str,
        labels: Mapping[str, Any],
        value: int,
    ) -> None:
        if value <= 0:
            return
        batch = self.batch
        stack = batch.add_stack(frames)
        text = _json(labels)
        key = (resource, time_ns // 1000, named, stack, thread, text)
        row = self._rows.get(key)
        if row is not None:
            total = batch.value[row] + value
            if total > decode.MAX_VALUE:
                raise PayloadError(f"the samples of one stack add up past 64 bits ({total})")
            batch.value[row] = total
            return
        self._rows[key] = len(batch)
        batch.time_us.append(time_ns // 1000)
        batch.type.append(named[0])
        batch.unit.append(named[1])
        batch.value.append(value)
        batch.stack_id.append(stack)
        batch.thread.append(thread)
        batch.labels.append(text)
        batch.trace_id.append(b"")
        batch.span_id.append(b"")
        batch.resource_index.append(resource)


def decode_ingest(query: Mapping[str, str], content_type: str, max_bytes: int, body: bytes) -> ProfileBatch:
    """The rows of one `/ingest` request; `PayloadError` for bad parameters or a bad body."""
    params = ingest_params(query, time.time_ns())
    rows = _Rows()
    resource = rows.resource(params.service)
    if params.format == "pprof":
        found = pprof_in.parse_pprof(
            _pprof_body(content_type, body), max_bytes, params.type, 10**9 // params.sample_rate
        )
        named = (found.type, found.unit)
        for sample in found.samples:
            labels = {**params.labels, **sample.labels}
            rows.add(resource, params.from_ns, named, sample.frames, sample.thread, labels, sample.value)
        return rows.batch
    stacks = folded.parse_lines(body) if params.format == "lines" else folded.parse_folded(body)
    kind = params.type or "cpu"
    unit = TYPE_UNITS[kind]
    for frames, count in stacks.items():
        value = count * 10**9 // params.sample_rate if not unit else count
        rows.add(resource, params.from_ns, (kind, unit or NANOSECONDS), frames, "", params.labels, value)
    return rows.batch


def _pprof_body(content_type: str, body: bytes) -> bytes:
    """The profile of a pprof `/ingest` body: the body itself, or its multipart `profile` field."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return body
    boundary = options.get(b"boundary")
    if not boundary:
        raise PayloadError("the multipart/form-data body has no boundary")
    fields: dict[str, bytes] = {}
    current: dict[str, Any] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] = current.get("field", b"") + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] = current.get("value", b"") + data[start:end]

    def on_header_end() -> None:
        if current.pop("field", b"").lower() == b"content-disposition":
            _, params = parse_options_header(current.get("value", b""))
            current["name"] = params.get(b"name", b"").decode("utf-8", "replace")
        current.pop("value", None)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.setdefault("data", []).append(data[start:end])

    def on_part_end() -> None:
        fields[current.pop("name", "")] = b"".join(current.pop("data", []))
        current.clear()

    callbacks: Any = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise PayloadError(f"not a multipart/form-data body: {exc}") from None
    if "profile" not in fields:
        raise PayloadError("the multipart/form-data body has no field named profile")
    return fields["profile"]


def decode_push(max_bytes: int, body: bytes) -> ProfileBatch:
    """The rows of a serialized `PushRequest`; `PayloadError` if it is not one or a profile is bad."""
    try:
        request = PushRequest.FromString(body)
    except (DecodeError, RecursionError) as exc:
        raise PayloadError(f"not a Pyroscope PushRequest: {exc}") from None
    return _push_rows(request, max_bytes)


def decode_push_json(max_bytes: int, body: bytes) -> ProfileBatch:
    """The rows of a `PushRequest` in the protobuf JSON mapping (Connect's JSON form)."""
    try:
        request = json_format.Parse(body, PushRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise PayloadError(f"not a Pyroscope PushRequest in JSON: {exc}") from None
    return _push_rows(request, max_bytes)


def _push_rows(request: PushRequest, max_bytes: int) -> ProfileBatch:
    rows = _Rows()
    now_ns = time.time_ns()
    for number, series in enumerate(request.series):
        labels: dict[str, Any] = {pair.name: pair.value for pair in series.labels}
        service = str(labels.pop(SERVICE_LABEL, "")) or UNKNOWN_SERVICE
        labels = {key: value for key, value in labels.items() if not key.startswith("__")}
        resource = rows.resource(service)
        for sample in series.samples:
            try:
                found = pprof_in.parse_pprof(sample.raw_profile, max_bytes)
            except PayloadError as exc:
                raise PayloadError(f"series {number}: {exc}") from None
            named = (found.type, found.unit)
            for one in found.samples:
                merged = {**labels, **one.labels}
                rows.add(resource, found.time_ns or now_ns, named, one.frames, one.thread, merged, one.value)
    return rows.batch


def _json(value: Mapping[str, Any]) -> str:
    """Compact JSON text of labels, keys sorted (as the OTLP decoder writes them)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _text_error(refused: Refused) -> Response:
    return PlainTextResponse(refused.message + "\n", refused.status, headers=retry_headers(refused))


def pyroscope_ingest_routes(pipeline: Pipeline, limits: Limits) -> list[BaseRoute]:
    """`POST /ingest`: folded, lines or pprof profiles, stored once answered 200."""

    async def ingest_profiles(request: Request) -> Response:
        query = dict(request.query_params)
        content_type = request.headers.get("content-type", "")
        decoder = partial(decode_ingest, query, content_type, limits.max_body_bytes)
        try:
            await ingest(request, pipeline, limits, decoder)
        except Refused as refused:
            return _text_error(refused)
        return Response(b"", 200)

    return [Route(INGEST_PATH, ingest_profiles, methods=["POST"])]


def pyroscope_push_routes(pipeline: Pipeline, limits: Limits) -> list[BaseRoute]:
    """`POST /push.v1.PusherService/Push` (Connect unary), answered with a `PushResponse` once stored."""
    decoders = push_decoders(limits.max_body_bytes)

    async def push(request: Request) -> Response:
        kind = media_type(request)
        decoder = decoders.get(kind)
        if decoder is None:
            refused = Refused(415, f"unsupported Content-Type {kind or '(none)'!r} (use {CONNECT_PROTO})")
            return _connect_error(refused)
        try:
            await ingest(request, pipeline, limits, decoder)
        except Refused as refused:
            return _connect_error(refused)
        if kind == JSON:
            return JSONResponse({})
        return Response(PushResponse().SerializeToString(), media_type=CONNECT_PROTO)

    return [Route(PUSH_PATH, push, methods=["POST"])]


def _connect_error(refused: Refused) -> Response:
    """A Connect unary error: the HTTP status, and `{"code", "message"}` in JSON."""
    body = {"code": _CONNECT_CODES.get(refused.status, "unknown"), "message": refused.message}
    return JSONResponse(body, refused.status, headers=retry_headers(refused))


def ingest_decoders(max_bytes: int) -> dict[str, Callable[[bytes], ProfileBatch]]:
    """`/ingest`'s decoder of a body sent with each Content-Type and no parameters (folded, unnamed)."""
    return {kind: partial(decode_ingest, {}, kind, max_bytes) for kind in INGEST_TYPES}


def push_decoders(max_bytes: int) -> dict[str, Callable[[bytes], ProfileBatch]]:
    """The push API's decoders by Content-Type: Connect's protobuf (and the usual protobuf name), JSON."""
    protobuf = partial(decode_push, max_bytes)
    return {
        CONNECT_PROTO: protobuf,
        "application/x-protobuf": protobuf,
        JSON: partial(decode_push_json, max_bytes),
    }


RECEIVERS = (
    HttpReceiver(
        name="pyroscope_ingest",
        port="query",
        decoders=ingest_decoders(Limits().max_body_bytes),
        routes=pyroscope_ingest_routes,
    ),
    HttpReceiver(
        name="pyroscope_push",
        port="query",
        decoders=push_decoders(Limits().max_body_bytes),
        routes=pyroscope_push_routes,
    ),
)
