"""The observatory's query API: Jaeger v1, Jaeger api/v3 and Zipkin v2 routes, logs, metrics and profiles, over one store."""

from __future__ import annotations

from starlette.routing import BaseRoute

from boutique.observatory.api.jaeger import jaeger_routes
from boutique.observatory.api.jaeger_v3 import v3_routes
from boutique.observatory.api.logs import logs_routes
from boutique.observatory.api.metrics import metrics_routes
from boutique.observatory.api.profiles import profiles_routes
from boutique.observatory.api.zipkin import zipkin_routes
from boutique.observatory.store.base import Store

__all__ = ["query_routes"]


def query_routes(store: Store) -> list[BaseRoute]:
    """Every query route (all under `/api/`), for mounting on the query port's app."""
    return [
        *v3_routes(store),
        *zipkin_routes(store),
        *logs_routes(store),
        *metrics_routes(store),
        *profiles_routes(store),
        *jaeger_routes(store),
    ]
