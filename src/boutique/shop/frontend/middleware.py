"""ASGI middleware of the frontend: the x-served-by header, the last-resort error guard and load shedding."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boutique.mesh import errors
from boutique.mesh.resilience.limiter import ConcurrencyLimiter

log = logging.getLogger(__name__)

SERVED_BY = b"x-served-by"
SHED = errors.SHED.encode()  # marks a response refused by the concurrency limiter, before any work
NEVER_SHED = ("/_healthz", "/static/")  # probes, and the cheap assets of pages already admitted
BUSY_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Busy - Boutique</title>"
    b"<h1>The shop is busy</h1><p>Too many shoppers at once. Please try again in a moment.</p></html>\n"
)


class ServedByMiddleware:
    """Stamps every HTTP response with `x-served-by: <instance id>` so load balancing is visible."""

    def __init__(self, app: ASGIApp, instance_id: str) -> None:
        self.app = app
        self.header = (SERVED_BY, instance_id.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the header to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_stamped(message: Message) -> None:
            """Forward a message, stamping the response start."""
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_stamped)


class GuardMiddleware:
    """Catches whatever the exception handlers did not, so no request ends in a traceback page."""

    def __init__(self, app: ASGIApp, handler: Callable[[Request, Exception], Awaitable[Response]]) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; on an uncaught exception answer with the handler's error page."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            """Forward a message, noting whether the response has started."""
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:  # too late for an error page; the client sees a cut-off response
                log.error(
                    "request failed after the response started", exc_info=exc, extra={"path": scope["path"]}
                )
                return
            response = await self.handler(Request(scope, receive), exc)
            await response(scope, receive, send)


class ConcurrencyLimitMiddleware:
    """Admits requests under the limiter's concurrency limit; answers the others at once with 503 + Retry-After.

    A shed request does no work: no routing, no session, no span and no call to any service. Health
    checks and static assets are neither limited nor measured (their latency says nothing of a page's).
    """

    def __init__(self, app: ASGIApp, limiter: ConcurrencyLimiter, instance_id: str = "") -> None:
        self.app = app
        self.limiter = limiter
        self.served_by = [(SERVED_BY, instance_id.encode("latin-1", "replace"))] if instance_id else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request under a permit, or shed it."""
        if scope["type"] != "http" or scope["path"].startswith(NEVER_SHED):
            await self.app(scope, receive, send)
            return
        permit = self.limiter.acquire()
        if permit is None:
            await self._shed(send)
            return
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            permit.release(sample=False)  # the client went away: its latency means nothing
            raise
        finally:
            permit.release()

    async def _shed(self, send: Send) -> None:
        """503 with Retry-After (whole seconds, as HTTP wants) and the shed marker."""
        retry_after = str(max(1, math.ceil(self.limiter.retry_after()))).encode()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(BUSY_PAGE)).encode()),
            (b"retry-after", retry_after),
            (b"cache-control", b"no-store"),
            (SHED, b"concurrency-limit"),
            *self.served_by,
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": BUSY_PAGE})
