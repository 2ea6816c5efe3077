"""The table of shop services: names, entry points, address variables and dependencies."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ServiceSpec:
    """One shop service as the runner and the CLI see it."""

    name: str
    kind: Literal["grpc", "http", "load"]
    module: str
    address_variable: str | None = None
    depends_on: tuple[str, ...] = ()

    def entry_point(self) -> Callable[[], Coroutine[Any, Any, None]]:
        """The module's `serve()` coroutine function, imported on demand."""
        return importlib.import_module(self.module).serve  # type: ignore[no-any-return]


_SPECS = [
    ServiceSpec(
        "productcatalog", "grpc", "boutique.shop.productcatalog.server", "PRODUCT_CATALOG_SERVICE_ADDR"
    ),
    ServiceSpec("currency", "grpc", "boutique.shop.currency.server", "CURRENCY_SERVICE_ADDR"),
    ServiceSpec("cart", "grpc", "boutique.shop.cart.server", "CART_SERVICE_ADDR"),
    ServiceSpec("shipping", "grpc", "boutique.shop.shipping.server", "SHIPPING_SERVICE_ADDR"),
    ServiceSpec("payment", "grpc", "boutique.shop.payment.server", "PAYMENT_SERVICE_ADDR"),
    ServiceSpec("email", "grpc", "boutique.shop.email.server", "EMAIL_SERVICE_ADDR"),
    ServiceSpec(
        "recommendation",
        "grpc",
        "boutique.shop.recommendation.server",
        "RECOMMENDATION_SERVICE_ADDR",
        ("productcatalog",),
    ),
    ServiceSpec("ad", "grpc", "boutique.shop.ad.server", "AD_SERVICE_ADDR"),
    ServiceSpec(
        "checkout",
        "grpc",
        "boutique.shop.checkout.server",
        "CHECKOUT_SERVICE_ADDR",
        ("productcatalog", "cart", "currency", "shipping", "payment", "email"),
    ),
    ServiceSpec(
        "frontend",
        "http",
        "boutique.shop.frontend.server",
        None,
        ("productcatalog", "currency", "cart", "recommendation", "shipping", "checkout", "ad"),
    ),
    ServiceSpec("loadgen", "load", "boutique.shop.loadgen.runner", None, ("frontend",)),
]

SERVICES: dict[str, ServiceSpec] = {spec.name: spec for spec in _SPECS}
BACKENDS = [spec.name for spec in _SPECS if spec.kind == "grpc"]
