"""The Zipkin receiver: `POST /api/v2/spans` on the zipkin port, Zipkin v2 JSON, plain or gzipped.

The sender is answered 202 with an empty body once its spans are stored; errors are plain text with
the status `receivers.http.ingest` chose (400, 413, 415, 429, 503, the last two with `Retry-After`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.pipeline import Pipeline
from boutique.observatory.receivers import zipkin
from boutique.observatory.receivers.base import HttpReceiver, Limits, SpanDecoder
from boutique.observatory.receivers.http import JSON, Refused, ingest, media_type, retry_headers

DECODERS: dict[str, SpanDecoder] = {"": zipkin.decode, JSON: zipkin.decode}  # Content-Type may be absent


def zipkin_ingest_routes(pipeline: Pipeline, limits: Limits) -> list[BaseRoute]:
    """`POST /api/v2/spans` taking Zipkin v2 JSON (plain or gzipped); 202 with an empty body."""

    async def spans(request: Request) -> Response:
        kind = media_type(request)
        decoder = DECODERS.get(kind)
        if decoder is None:
            return PlainTextResponse(f"unsupported Content-Type {kind!r} (use {JSON})", 415)
        try:
            await ingest(request, pipeline, limits, decoder)
        except Refused as refused:
            return PlainTextResponse(refused.message, refused.status, headers=retry_headers(refused))
        return Response(status_code=202)

    return [Route("/api/v2/spans", spans, methods=["POST"])]


RECEIVER = HttpReceiver(name="zipkin", port="zipkin", decoders=DECODERS, routes=zipkin_ingest_routes)
