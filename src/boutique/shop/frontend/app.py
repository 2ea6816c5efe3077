"""Builds the frontend's Starlette application: routes, middleware and error handlers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from boutique.mesh.http_observe import observe_http
from boutique.mesh.metrics import LIMITER_STATS
from boutique.mesh.resilience.limiter import LimiterSettings
from boutique.mesh.settings import MeshSettings
from boutique.shop.errors import ShopError
from boutique.shop.frontend.clients import FrontendClients
from boutique.shop.frontend.failures import ErrorPages, PageError
from boutique.shop.frontend.images import PRODUCT_IMAGES, product_images
from boutique.shop.frontend.middleware import ConcurrencyLimitMiddleware, GuardMiddleware, ServedByMiddleware
from boutique.shop.frontend.pages import Pages
from boutique.shop.frontend.rendering import Renderer
from boutique.shop.frontend.session import SessionMiddleware
from boutique.shop.frontend.settings import FrontendSettings


def create_app(
    clients: FrontendClients, settings: FrontendSettings, limits: LimiterSettings | None = None
) -> ASGIApp:
    """The shop web site, observed (a span per request when tracing, metrics per route) and load-shedding.

    The concurrency limiter (BOUTIQUE_LIMITER*, see `LimiterSettings`) sits outside everything else, so a
    shed request costs no span, no routing and no service call.
    """
    site = observe_http(create_site(clients, settings))
    limiter = (limits or MeshSettings.current().limiter).build("http")
    if limiter is None:
        return site
    LIMITER_STATS.track(limiter)
    return ConcurrencyLimitMiddleware(site, limiter, settings.instance_id)


def create_site(clients: FrontendClients, settings: FrontendSettings) -> Starlette:
    """The shop web site over these clients; the caller owns the clients and closes them."""
    renderer = Renderer(settings)
    pages = Pages(clients, settings, renderer)
    errors = ErrorPages(renderer, settings)
    routes = [
        Route("/", pages.home, methods=["GET"], name="home"),
        Route("/product/{product_id}", pages.product, methods=["GET"], name="product"),
        Route("/cart", pages.cart, methods=["GET", "POST"], name="cart"),
        Route("/cart/empty", pages.empty_cart, methods=["POST"], name="empty_cart"),
        Route("/cart/checkout", pages.checkout, methods=["POST"], name="checkout"),
        Route("/order/{order_key}", pages.order_status, methods=["GET"], name="order_status"),
        Route("/setCurrency", pages.set_currency, methods=["POST"], name="set_currency"),
        Route("/logout", pages.logout, methods=["GET"], name="logout"),
        Route("/_healthz", pages.healthz, methods=["GET"], name="healthz"),
        Mount(PRODUCT_IMAGES, app=product_images(), name="product_images"),
        Mount("/static", app=StaticFiles(packages=[("boutique.shop.frontend", "static")]), name="static"),
    ]
    middleware = [
        Middleware(ServedByMiddleware, instance_id=settings.instance_id),
        Middleware(SessionMiddleware),
        Middleware(GuardMiddleware, handler=errors.unexpected),
    ]
    handlers = {
        HTTPException: errors.http_error,
        PageError: errors.page_error,
        ShopError: errors.shop_error,
    }
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
