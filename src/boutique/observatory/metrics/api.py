"""The metrics query API (JSON under `/api/`), over the store's `read`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from boutique.observatory.store.base import Store


def metrics_routes(store: Store) -> list[BaseRoute]:
    """The metrics routes for the query port."""
    return []
