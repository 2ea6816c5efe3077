"""Product images, served late while the imageSlowLoad flag says so.

The delay is an asyncio sleep before the file is sent: the image's own request waits, every other
request goes on. It happens inside the request's span (`GET /static/img/products`), which records the
flag and `app.image.delay_ms`, so the observatory shows which images came late and by how much.
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from boutique.mesh.flags import flags

IMAGE_SLOW_LOAD = "imageSlowLoad"  # flag: milliseconds product images are served late
PRODUCT_IMAGES = "/static/img/products"  # where the catalog's pictures are served (products.json)


class SlowImages:
    """An ASGI app serving files through `app`, each after the imageSlowLoad flag's delay."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wait the flag's milliseconds (none when off), then serve the file."""
        if scope["type"] == "http":
            delay_ms = flags().number(IMAGE_SLOW_LOAD)
            if delay_ms > 0:
                trace.get_current_span().set_attribute("app.image.delay_ms", round(delay_ms))
                await asyncio.sleep(delay_ms / 1000)
        await self.app(scope, receive, send)


def product_images() -> ASGIApp:
    """The product pictures, from the package's static/img/products, served late while the flag says so."""
    return SlowImages(StaticFiles(packages=[("boutique.shop.frontend", "static/img/products")]))
