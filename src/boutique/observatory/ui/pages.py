"""Rendering shared by every UI page: the Jinja2 environment, the layout's navigation, formatting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

NAVIGATION = (
    ("search", "Search", "/search"),
    ("logs", "Logs", "/logs"),
    ("metrics", "Metrics", "/charts"),
    ("profiles", "Profiles", "/profiles"),
    ("services", "Services", "/dependencies"),
    ("mesh", "Mesh", "/mesh"),
    ("flags", "Flags", "/flags"),
)

# The same palette and hash as `Observatory.colour` in static/ui.js, so a service has one colour everywhere.
PALETTE = (
    "#3b6fd8",
    "#d9822b",
    "#2e9e6b",
    "#c2417a",
    "#7a52c7",
    "#1f9bb0",
    "#c9a100",
    "#5b7b2b",
    "#d1495b",
    "#4a5bb5",
    "#8c6d46",
    "#2f8f8f",
)


def colour_index(service: str) -> int:
    """The palette index of a service: `hash = (hash * 31 + code point) mod 2**32` over its name."""
    value = 0
    for char in service:
        value = (value * 31 + ord(char)) & 0xFFFFFFFF
    return value % len(PALETTE)


def service_colour(service: str) -> str:
    """The colour of a service, as `Observatory.colour` gives it in the browser."""
    return PALETTE[colour_index(service)]


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("boutique.observatory.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def duration(us: float) -> str:
    """A duration in µs as a person reads it: 850µs, 12.3ms, 4.56s."""
    if us < 1000:
        return f"{us:.0f}µs"
    if us < 1_000_000:
        return f"{us / 1000:.3g}ms"
    return f"{us / 1_000_000:.3g}s"


_ENV.filters["duration"] = duration
_ENV.filters["colour"] = service_colour


def render(
    request: Request, template: str, section: str, context: Mapping[str, Any], status: int = 200
) -> HTMLResponse:
    """A page in the layout, with `section` marked current in the navigation."""
    values = {"navigation": NAVIGATION, "section": section, "title": section.capitalize(), **context}
    return HTMLResponse(_ENV.get_template(template).render(values), status_code=status)
