"""ASGI middleware of the frontend: the x-served-by header and the last-resort error guard."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

SERVED_BY = b"x-served-by"


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
