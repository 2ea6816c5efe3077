"""Server-Sent Events responses, as the logs tail and the mesh stream send them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}  # no cached or proxy-buffered events


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """A `text/event-stream` response of `events` (each already framed, ending in a blank line)."""
    return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)
