"""The logs query API (JSON under `/api/`), over the store's `read`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from boutique.observatory.store.base import Store


def logs_routes(store: Store) -> list[BaseRoute]:
    """The logs routes for the query port."""
    return []
