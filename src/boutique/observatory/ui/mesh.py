"""The Mesh page: live instances, balancers and circuit breakers of every registered process.

`/mesh` is the page, `/api/mesh/stream` streams merged snapshots (Server-Sent Events, one a second)
and `/api/mesh` answers one snapshot as JSON. The data comes from the registry and from each
process's status endpoints over HTTP (see `mesh_feed`), never from the mesh's code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from boutique.observatory.sse import event_stream
from boutique.observatory.ui.mesh_feed import MeshFeed, unconfigured_snapshot
from boutique.observatory.ui.mesh_wire import TooManySubscribers
from boutique.observatory.ui.pages import render

FIRST_SNAPSHOT_TIMEOUT = 10.0
EXAMPLE_COMMAND = "boutique observatory --registry-url http://127.0.0.1:7600"


def _busy() -> JSONResponse:
    """The answer when the feed already serves as many watchers as it will."""
    return JSONResponse({"error": "too many watchers of the mesh; try again later"}, status_code=503)


def routes(registry_url: str | None, feed: MeshFeed | None = None) -> list[BaseRoute]:
    """The mesh page, its live stream and its one-shot JSON, over a feed of `registry_url`."""
    if feed is None and registry_url:
        feed = MeshFeed(registry_url)

    async def page(request: Request) -> Response:
        """The page; it explains how to point the observatory at a registry when none is set."""
        context = {"registry_url": feed.registry_url if feed else None, "example_command": EXAMPLE_COMMAND}
        return render(request, "mesh.html", "mesh", context)

    async def snapshot(request: Request) -> Response:
        """One merged snapshot (waits for the first one when nobody was watching)."""
        if feed is None:
            return JSONResponse(unconfigured_snapshot())
        try:
            subscription = feed.subscribe()
        except TooManySubscribers:
            return _busy()
        with subscription:
            try:
                first = await asyncio.wait_for(subscription.next(), FIRST_SNAPSHOT_TIMEOUT)
            except TimeoutError:
                return JSONResponse({"error": "no snapshot in time"}, status_code=503)
        return Response(first.text, media_type="application/json")

    async def stream(request: Request) -> Response:
        """Server-Sent Events: one snapshot a second for as long as the browser listens."""
        if feed is None:
            return JSONResponse(unconfigured_snapshot()["registry"], status_code=404)
        if feed.full:
            return _busy()
        return event_stream(_events(feed))

    return [
        Route("/mesh", page),
        Route("/api/mesh", snapshot),
        Route("/api/mesh/stream", stream),
    ]


async def _events(feed: MeshFeed) -> AsyncIterator[str]:
    """The event stream of one watcher; leaving (or being cancelled) unsubscribes at once."""
    try:
        subscription = feed.subscribe()
    except TooManySubscribers as exc:
        yield f"event: busy\ndata: {json.dumps(str(exc))}\n\n"
        return
    with subscription:
        yield "retry: 2000\n\n"
        async for snapshot in subscription:
            yield f"data: {snapshot.text}\n\n"
