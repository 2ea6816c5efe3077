"""Jinja2 rendering of the shop's pages, with the layout's shared context filled in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from boutique.shop import money
from boutique.shop.frontend.session import CURRENCIES, session_of
from boutique.shop.frontend.settings import FrontendSettings
from boutique.shop.telemetry import tracer


class Renderer:
    """Renders templates shipped with the package; autoescaping on, undefined names are errors."""

    def __init__(self, settings: FrontendSettings) -> None:
        self.settings = settings
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("boutique.shop.frontend", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["price"] = money.display

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        """Render one page; the layout gets currency, picker codes, cart count, instance and observatory."""
        session = session_of(request)
        values: dict[str, Any] = {
            "currency": session.currency,
            "currencies": CURRENCIES,
            "cart_count": None,
            "currency_note": "",
            "instance_id": self.settings.instance_id,
            "observatory_url": self.settings.observatory_url,
        }
        values.update(context)
        with tracer.start_as_current_span(f"render {template}"):
            html = self.env.get_template(template).render(values)
        return HTMLResponse(html, status_code=status, headers=dict(headers or {}))
