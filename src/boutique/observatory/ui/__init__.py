"""The observatory's web UI on the query port: search, trace, logs, metrics, profiles, services, mesh, flags.

Pages are rendered on the server (Jinja2) and made interactive with a little plain JavaScript from
`static/` (no build step). Each page is a module with a `routes(...)` function; this package joins them.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from boutique.observatory.api import query_routes
from boutique.observatory.store.base import Store
from boutique.observatory.ui import flags, logs, mesh, metrics, profiles, search, services, trace
from boutique.observatory.ui.flags import FlagControls
from boutique.observatory.ui.local_api import LocalApi

__all__ = ["ui_routes"]


async def _home(request: Request) -> Response:
    """The search page is the front page, as in Jaeger."""
    return RedirectResponse("/search", status_code=307)


def ui_routes(
    store: Store,
    registry_url: str | None = None,
    flag_controls: FlagControls | None = None,
    chaos_log: Path | None = None,
) -> list[BaseRoute]:
    """Every page of the UI and its static files (the Flags page and chart markers need a flag file; the
    markers of process faults, `boutique chaos`'s log)."""
    controls = flag_controls or FlagControls()
    api = LocalApi(query_routes(store))  # the Logs, Metrics and Profiles pages read through the query API
    return [
        Route("/", _home),
        *search.routes(store),
        *trace.routes(store),
        *logs.routes(api),
        *metrics.routes(api),
        *profiles.routes(api),
        *services.routes(store, controls.file, chaos_log),
        *mesh.routes(registry_url),
        *flags.routes(controls),
        Mount("/static", app=StaticFiles(packages=[("boutique.observatory.ui", "static")]), name="static"),
    ]
