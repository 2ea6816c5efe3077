"""The catalog's feature-flag faults: one product that fails, and a slow query under one global lock.

`productCatalogFailure` is evaluated with the requested `product_id` (the shipped targeting fails only
OLJCESPC7Z). `productCatalogDbLock` names milliseconds: every catalog call then runs a simulated database
query that long while holding the process's one lock, so concurrent calls queue; each server span says
how many calls it waited behind and for how long, and its `db.query` child shows the staircase.
"""

from __future__ import annotations

import asyncio
import time

from opentelemetry import trace

from boutique.mesh import deadline
from boutique.mesh.flags import flags
from boutique.shop.errors import Reason, ShopError
from boutique.shop.telemetry import tracer

PRODUCT_CATALOG_FAILURE = "productCatalogFailure"
PRODUCT_CATALOG_DB_LOCK = "productCatalogDbLock"


def check_product(product_id: str) -> None:
    """Fail the lookup of `product_id` when productCatalogFailure targets it (INTERNAL: a retry fails too)."""
    if flags().boolean(PRODUCT_CATALOG_FAILURE, product_id=product_id):
        raise ShopError(
            f"GetProduct failed on purpose for {product_id!r}: the {PRODUCT_CATALOG_FAILURE} flag is on",
            reason=Reason.FAULT_INJECTED,
            public_message=f"product {product_id} cannot be shown right now",
            metadata={"flag": PRODUCT_CATALOG_FAILURE, "product_id": product_id},
        )


class DatabaseLock:
    """The one lock every catalog call takes while productCatalogDbLock is on, around a slow query."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._queued = 0  # calls holding the lock or waiting for it

    async def query(self, operation: str) -> None:
        """Run the simulated query of `operation` under the lock, if the flag asks for one."""
        query_ms = flags().number(PRODUCT_CATALOG_DB_LOCK)
        if query_ms <= 0:
            return
        span = trace.get_current_span()
        ahead = self._queued
        self._queued += 1
        started = time.perf_counter()
        try:
            async with self._lock:
                wait_ms = (time.perf_counter() - started) * 1000
                span.set_attribute("app.lock.waited_behind", ahead)
                span.set_attribute("app.lock.wait_ms", round(wait_ms, 3))
                deadline.check("query the catalog database")  # the caller gave up while this call queued
                with tracer.start_as_current_span(
                    "db.query",
                    kind=trace.SpanKind.CLIENT,
                    attributes={
                        "db.system": "other_sql",
                        "db.operation.name": operation,
                        "app.db.query_ms": query_ms,
                        "app.lock.waited_behind": ahead,
                    },
                ):
                    await asyncio.sleep(query_ms / 1000)
        finally:
            self._queued -= 1
