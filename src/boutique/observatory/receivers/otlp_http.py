"""The OTLP/HTTP receiver: `POST /v1/traces` on the otlp_http port, OTLP protobuf or JSON, plain or gzipped.

The sender is answered once its spans are stored: 200 with an `ExportTraceServiceResponse` (carrying
`partial_success` when spans were refused). Errors (400, 413, 415, 429, 503, the last two with
`Retry-After`) carry a `google.rpc.Status` in the request's format; an unsupported Content-Type in JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.model import SpanBatch
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.receivers import otlp_json, otlp_proto
from boutique.observatory.receivers.base import B, HttpReceiver, Limits, SpanDecoder
from boutique.observatory.receivers.http import JSON, Refused, ingest, media_type, retry_headers

PROTOBUF = "application/x-protobuf"
DECODERS: dict[str, SpanDecoder] = {PROTOBUF: otlp_proto.decode, JSON: otlp_json.decode}

# google.rpc.Code numbers used in OTLP error bodies.
_RPC_CODES = {400: 3, 413: 8, 415: 3, 429: 8, 503: 14}

Format = Literal["protobuf", "json"]


def _otlp_error(refused: Refused, form: Format) -> Response:
    """An OTLP error response: a `google.rpc.Status` in the request's format."""
    code = _RPC_CODES.get(refused.status, 2)
    headers = retry_headers(refused)
    if form == "protobuf":
        body = Status(code=code, message=refused.message).SerializeToString()
        return Response(body, status_code=refused.status, media_type=PROTOBUF, headers=headers)
    return JSONResponse({"code": code, "message": refused.message}, refused.status, headers=headers)


def _trace_response(batch: SpanBatch) -> ExportTraceServiceResponse:
    """An `ExportTraceServiceResponse`, carrying `partial_success` when spans were refused."""
    response = ExportTraceServiceResponse()
    if batch.rejected:
        response.partial_success.rejected_spans = batch.rejected
        response.partial_success.error_message = batch.rejection
    return response


async def otlp_export(
    request: Request,
    pipeline: Pipeline,
    limits: Limits,
    decoders: Mapping[str, Callable[[bytes], B]],
    answer: Callable[[B], Message],
) -> Response:
    """One OTLP/HTTP export of any signal: decoded by Content-Type and stored, answered 200 with
    `answer(batch)` or with a `google.rpc.Status`, both in the request's format."""
    kind = media_type(request)
    decoder = decoders.get(kind)
    if decoder is None:
        message = f"unsupported Content-Type {kind or '(none)'!r} (use {PROTOBUF} or {JSON})"
        return _otlp_error(Refused(415, message), "json")
    form: Format = "protobuf" if kind == PROTOBUF else "json"
    try:
        batch = await ingest(request, pipeline, limits, decoder)
    except Refused as refused:
        return _otlp_error(refused, form)
    response = answer(batch)
    if form == "protobuf":
        return Response(response.SerializeToString(), media_type=PROTOBUF)
    return JSONResponse(json_format.MessageToDict(response))


def otlp_http_routes(pipeline: Pipeline, limits: Limits) -> list[BaseRoute]:
    """`POST /v1/traces` taking OTLP protobuf or JSON, plain or gzipped."""

    async def export(request: Request) -> Response:
        return await otlp_export(request, pipeline, limits, DECODERS, _trace_response)

    return [Route("/v1/traces", export, methods=["POST"])]


RECEIVER = HttpReceiver(name="otlp_http", port="otlp_http", decoders=DECODERS, routes=otlp_http_routes)
