"""The observatory's web UI on the query port: search, trace, services and mesh pages over the query API.

Pages are rendered on the server (Jinja2) and made interactive with a little plain JavaScript from
`static/` (no build step). Each page is a module with a `routes(...)` function; this package joins them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from boutique.observatory.store.base import Store
from boutique.observatory.ui import mesh, search, services, trace

__all__ = ["ui_routes"]


async def _home(request: Request) -> Response:
    """The search page is the front page, as in Jaeger."""
    return RedirectResponse("/search", status_code=307)


def ui_routes(store: Store, registry_url: str | None = None) -> list[BaseRoute]:
    """Every page of the UI and its static files."""
    return [
        Route("/", _home),
        *search.routes(store),
        *trace.routes(store),
        *services.routes(store),
        *mesh.routes(registry_url),
        Mount("/static", app=StaticFiles(packages=[("boutique.observatory.ui", "static")]), name="static"),
    ]
