"""Per-process status endpoints on the metrics port: /metrics, /healthz, /mesh/status and the live /mesh/stream.

Who may read what: on loopback, as on one machine, everything is open unless BOUTIQUE_STATUS_TOKEN is
set, and then every route but /healthz needs it as a bearer token. Off loopback (a container, a pod)
/metrics and /healthz stay open, so Prometheus and probes reach them from the network, while the
control and status routes (/mesh/*) need the token, and answer 403 naming BOUTIQUE_STATUS_TOKEN
when the process has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from boutique.asgi_server import BackgroundServer
from boutique.mesh.metrics import LIMITER_STATS
from boutique.mesh.runtime import Mesh
from boutique.sockets import is_loopback
from boutique.tokens import bearer_matches

log = logging.getLogger(__name__)

STREAM_INTERVAL = 1.0


def breaker_events(mesh: Mesh, host: str) -> list[dict[str, Any]]:
    """One Hystrix-stream style event per breaker of this process."""
    events = []
    for dependency in list(mesh.dependencies.values()):
        if dependency.breaker is None:
            continue
        event = dict(dependency.breaker.snapshot())
        event.update(
            {
                "group": dependency.name,
                "caller": mesh.caller,
                "host": host,
                "instances": len(dependency.instances),
            }
        )
        events.append(event)
    return events


def process_facts(process: psutil.Process) -> dict[str, Any]:
    """The process itself: its pid and resident memory (RSS, bytes), so a leak shows beside its breakers."""
    return {"pid": process.pid, "rss_bytes": process.memory_info().rss}


NO_TOKEN = (
    "the /mesh/* endpoints of a process listening off loopback need a token: set BOUTIQUE_STATUS_TOKEN "
    "and send it as 'Authorization: Bearer <token>' (/metrics and /healthz need none)"
)


def build_app(
    mesh: Mesh,
    token: str | None,
    health: Callable[[], bool] = lambda: True,
    closing: asyncio.Event | None = None,
    loopback: bool = True,
) -> Starlette:
    """The status app. On loopback every route but /healthz (for probes) needs the bearer token when one is
    configured; off loopback (`loopback` False) /metrics is open too and /mesh/* always need a token,
    refused with 403 while none is configured.

    Setting `closing` ends every open /mesh/stream at once, so stopping the server never waits on a
    watcher (uvicorn lets a streaming response run on after its server stops).
    """
    closing = closing or asyncio.Event()
    host = socket.gethostname()
    me = psutil.Process()

    def guard(handler: Callable[[Request], Any], control: bool = True) -> Callable[[Request], Any]:
        """`handler` behind the token; off loopback only control routes (`control`) are behind it."""
        if not loopback and not control:
            return handler

        async def wrapped(request: Request) -> Response:
            if not token and not loopback:
                return JSONResponse({"error": NO_TOKEN}, status_code=403)
            if token and not bearer_matches(request.headers.get("authorization"), token):
                return JSONResponse(
                    {"error": "bearer token required (BOUTIQUE_STATUS_TOKEN)"}, status_code=401
                )
            return await handler(request)

        return wrapped

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        return JSONResponse(
            {
                "caller": mesh.caller,
                "process": process_facts(me),
                "dependencies": mesh.snapshot(),
                "limiters": LIMITER_STATS.snapshot(),
            }
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok" if health() else "not serving", status_code=200 if health() else 503)

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while not closing.is_set() and not await request.is_disconnected():
                for event in breaker_events(mesh, host):
                    yield f"data: {json.dumps(event)}\n\n"
                yield f"event: ping\ndata: {json.dumps({'dependencies': len(mesh.dependencies)})}\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), STREAM_INTERVAL)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/metrics", guard(metrics, control=False)),
            Route("/mesh/status", guard(status)),
            Route("/mesh/stream", guard(stream)),
            Route("/healthz", healthz),
        ]
    )


class StatusServer(BackgroundServer):
    """The status endpoints of one process (who may read which: see the module's docstring)."""

    def __init__(
        self,
        mesh: Mesh,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        health: Callable[[], bool] = lambda: True,
    ) -> None:
        self.closing = asyncio.Event()
        app = build_app(mesh, token, health, self.closing, loopback=is_loopback(host))
        super().__init__(app, host, port, "metrics")

    async def stop(self) -> None:
        """End the open streams, then stop serving."""
        self.closing.set()
        await super().stop()
