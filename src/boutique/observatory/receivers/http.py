"""HTTP ingest: OTLP/HTTP `POST /v1/traces` and Zipkin `POST /api/v2/spans`, in front of a `Pipeline`.

Bodies are read with a running size check and gunzipped incrementally with a bounded output size, so
neither a large upload nor a gzip bomb is ever held in memory beyond the limit (413). The sender is
answered once its spans are stored: 200 (OTLP, with `partial_success` when spans were refused) or
202 (Zipkin); 400 for data that can never be stored (do not retry); 429 / 503 with `Retry-After`
when the queue is full or the store is failing (retry later). OTLP errors carry a `google.rpc.Status`
in the request's format (protobuf or JSON).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.model import SpanBatch
from boutique.observatory.pipeline import Pipeline, QueueFull, StoreFailed
from boutique.observatory.receivers import otlp_json, otlp_proto, zipkin
from boutique.observatory.receivers.otlp_proto import PayloadError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
INLINE_DECODE_BYTES = 512 * 1024  # larger bodies are decoded on a worker thread, off the event loop

# google.rpc.Code numbers used in OTLP error bodies.
_RPC_CODES = {400: 3, 413: 8, 415: 3, 429: 8, 503: 14}

Format = Literal["protobuf", "json"]


@dataclass(frozen=True)
class Limits:
    """Request limits; `max_body_bytes` applies to the body as sent and, when gzipped, as inflated."""

    max_body_bytes: int = 16 * 1024 * 1024


class Refused(Exception):
    """A request answered with an HTTP error status instead of being ingested."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class _Gunzip:
    """Incremental gzip inflation that refuses (413) as soon as the output passes the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        """Inflate one chunk of the compressed body (concatenated gzip members are allowed)."""
        try:
            while data:
                if self._inflater.eof:
                    self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                out = self._inflater.decompress(data, self.limit - self.size + 1)
                self.size += len(out)
                if self.size > self.limit:
                    raise Refused(413, f"the inflated body is larger than {self.limit} bytes")
                self.parts.append(out)
                data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise Refused(400, f"the body is not valid gzip: {exc}") from None

    def finish(self) -> bytes:
        """The inflated body; 400 if the gzip stream was cut short."""
        if not self._inflater.eof:
            raise Refused(400, "the gzip body is truncated")
        return b"".join(self.parts)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, gunzipped if so encoded; `Refused` for 400 / 413 / 415 conditions."""
    limit = limits.max_body_bytes
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise Refused(415, f"unsupported Content-Encoding {encoding!r} (use gzip or identity)")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Refused(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise Refused(413, f"the body is larger than {limit} bytes")
    gunzip = _Gunzip(limit) if encoding in ("gzip", "x-gzip") else None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is larger than {limit} bytes")
        if gunzip is None:
            parts.append(chunk)
        elif chunk:
            gunzip.feed(chunk)
    if size == 0:
        raise Refused(400, "the request body is empty")
    body = b"".join(parts) if gunzip is None else gunzip.finish()
    if not body:
        raise Refused(400, "the request body is empty")
    return body


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower-case ("" when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _decode(decoder: Callable[[bytes], SpanBatch], body: bytes) -> SpanBatch:
    if len(body) <= INLINE_DECODE_BYTES:
        return decoder(body)
    return await asyncio.to_thread(decoder, body)


async def _ingest(
    request: Request, pipeline: Pipeline, limits: Limits, decoder: Callable[[bytes], SpanBatch]
) -> SpanBatch:
    """Read, decode and store one request's spans; `Refused` with the status to answer otherwise."""
    body = await read_body(request, limits)
    try:
        batch = await _decode(decoder, body)
    except PayloadError as exc:
        raise Refused(400, str(exc)) from None
    try:
        await pipeline.submit(batch)
    except QueueFull as exc:
        raise Refused(429, f"the observatory is busy: {exc}", retry_after=exc.retry_after) from None
    except StoreFailed as exc:
        raise Refused(503, str(exc), retry_after=exc.retry_after) from None
    return batch


def _retry_headers(refused: Refused) -> dict[str, str]:
    return {} if refused.retry_after is None else {"Retry-After": str(refused.retry_after)}


def _otlp_error(refused: Refused, form: Format) -> Response:
    """An OTLP error response: a `google.rpc.Status` in the request's format."""
    code = _RPC_CODES.get(refused.status, 2)
    headers = _retry_headers(refused)
    if form == "protobuf":
        body = Status(code=code, message=refused.message).SerializeToString()
        return Response(body, status_code=refused.status, media_type=PROTOBUF, headers=headers)
    return JSONResponse({"code": code, "message": refused.message}, refused.status, headers=headers)


def _otlp_success(batch: SpanBatch, form: Format) -> Response:
    """200 with an `ExportTraceServiceResponse`, carrying `partial_success` when spans were refused."""
    response = ExportTraceServiceResponse()
    if batch.rejected:
        response.partial_success.rejected_spans = batch.rejected
        response.partial_success.error_message = batch.rejection
    if form == "protobuf":
        return Response(response.SerializeToString(), media_type=PROTOBUF)
    return JSONResponse(json_format.MessageToDict(response))


def otlp_http_routes(pipeline: Pipeline, limits: Limits) -> list[BaseRoute]:
    """`POST /v1/traces` taking OTLP protobuf or JSON, plain or gzipped."""

    async def export(request: Request) -> Response:
        kind = media_type(request)
        form: Format
        if kind == PROTOBUF:
            form, decoder = "protobuf", otlp_proto.decode
        elif kind == JSON:
            form, decoder = "json", otlp_json.decode
        else:
            message = f"unsupported Content-Type {kind or '(none)'!r} (use {PROTOBUF} or {JSON})"
            return _otlp_error(Refused(415, message), "json")
        try:
            batch = await _ingest(request, pipeline, limits, decoder)
        except Refused as refused:
            return _otlp_error(refused, form)
        return _otlp_success(batch, form)

    return [Route("/v1/traces", export, methods=["POST"])]


def zipkin_routes(pipeline: Pipeline, limits: Limits) -> list[BaseRoute]:
    """`POST /api/v2/spans` taking Zipkin v2 JSON (plain or gzipped); 202 with an empty body."""

    async def spans(request: Request) -> Response:
        kind = media_type(request)
        if kind not in ("", JSON):
            return PlainTextResponse(f"unsupported Content-Type {kind!r} (use {JSON})", 415)
        try:
            await _ingest(request, pipeline, limits, zipkin.decode)
        except Refused as refused:
            return PlainTextResponse(refused.message, refused.status, headers=_retry_headers(refused))
        return Response(status_code=202)

    return [Route("/api/v2/spans", spans, methods=["POST"])]
