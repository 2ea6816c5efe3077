"""What the HTTP receivers share: reading a request body within limits, and ingesting it into a `Pipeline`.

Bodies are read with a running size check and gunzipped incrementally with a bounded output size, so
neither a large upload nor a gzip bomb is ever held in memory beyond the limit (413). `ingest` answers
with the spans once they are stored, or raises `Refused` with the status to answer: 400 for data that
can never be stored (do not retry); 429 / 503 with `Retry-After` when the queue is full or the store is
failing (retry later). Each receiver turns that into its protocol's response.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from starlette.requests import Request

from boutique.observatory.pipeline import Pipeline, QueueFull, StoreFailed
from boutique.observatory.receivers.base import B, Limits, decode_payload
from boutique.observatory.receivers.otlp_proto import PayloadError

JSON = "application/json"


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


async def read_body(request: Request, limits: Limits, allow_empty: bool = False) -> bytes:
    """The request body, gunzipped if so encoded; `Refused` for 400 / 413 / 415 conditions.

    An empty body is refused (400) unless `allow_empty`, when it is returned as b"".
    """
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
    if size == 0 and allow_empty:
        return b""
    if size == 0:
        raise Refused(400, "the request body is empty")
    body = b"".join(parts) if gunzip is None else gunzip.finish()
    if not body and not allow_empty:
        raise Refused(400, "the request body is empty")
    return body


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower-case ("" when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def ingest(request: Request, pipeline: Pipeline, limits: Limits, decoder: Callable[[bytes], B]) -> B:
    """Read, decode and store one request's batch (spans, logs or metrics); `Refused` with the status to answer otherwise."""
    body = await read_body(request, limits)
    try:
        batch = await decode_payload(decoder, body)
    except PayloadError as exc:
        raise Refused(400, str(exc)) from None
    try:
        await pipeline.submit(batch)
    except QueueFull as exc:
        raise Refused(429, f"the observatory is busy: {exc}", retry_after=exc.retry_after) from None
    except StoreFailed as exc:
        raise Refused(503, str(exc), retry_after=exc.retry_after) from None
    return batch


def retry_headers(refused: Refused) -> dict[str, str]:
    """`Retry-After` for a refusal the sender should retry later; none otherwise."""
    return {} if refused.retry_after is None else {"Retry-After": str(refused.retry_after)}
