"""HTTP servers observed like gRPC ones: a SERVER span per request and RED metrics per route template.

`observe_http(app)` wraps any ASGI application. Spans come from OpenTelemetry's ASGI middleware (W3C and
B3 headers accepted, see `propagation`), named `METHOD /route/{template}` once routing has matched, so
the operation list stays short; probes and scrapes are neither traced nor counted.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boutique.mesh.metrics import HTTP_STATS
from boutique.mesh.tracing import sdk_installed

UNMATCHED = "unmatched"  # the route label of requests no route matched (404s): one label, not one per path
QUIET_PATHS = ("/_healthz", "/healthz", "/metrics")


def route_template(scope: Scope) -> str:
    """The template of the route that matched (`/product/{product_id}`), or UNMATCHED."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RouteMetricsMiddleware:
    """Counts requests by method, route template and status, times them, and names the request's span."""

    def __init__(self, app: ASGIApp, quiet_paths: Collection[str] = QUIET_PATHS) -> None:
        self.app = app
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then account it under its route template."""
        if scope["type"] != "http" or scope.get("path") in self.quiet_paths:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees when the app raises before answering
        started = time.perf_counter()

        method = str(scope.get("method", "GET"))

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Routing is done by now and the span still open (it ends with the last body chunk).
                template = route_template(scope)
                span = trace.get_current_span()
                if template != UNMATCHED and span.is_recording():
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            template = route_template(scope)
            HTTP_STATS.count(method, template, str(status)).inc()
            HTTP_STATS.latency(method, template).observe(time.perf_counter() - started)


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The span's first name: the method alone, until the route is known (never the raw path)."""
    return str(scope.get("method") or "HTTP"), {}


def observe_http(app: ASGIApp, quiet_paths: Collection[str] = QUIET_PATHS) -> ASGIApp:
    """`app` with route metrics and, when an OpenTelemetry SDK is installed, a SERVER span per request."""
    observed: ASGIApp = RouteMetricsMiddleware(app, quiet_paths)
    if not sdk_installed():
        return observed
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # Searched in the request's URL without its query (scheme://host:port/path).
    excluded = ",".join(f"//[^/]+{path}$" for path in quiet_paths)
    return OpenTelemetryMiddleware(  # type: ignore[no-any-return]
        observed,
        excluded_urls=excluded,
        default_span_details=_span_details,
        exclude_spans=["receive", "send"],
    )
