"""recommendationCacheFailure: a product-id cache that misses often, grows on every miss, and is scanned
whole on every call, so the service's memory and latency climb together while the flag is on.

The fault is the classic one: the miss path appends what it fetched to the cache without dropping what
the cache already holds, and appends the cache to itself as well, so every miss doubles it. A cap keeps
it from eating the machine (tens of MB); the cache is emptied as soon as the flag is off.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

from opentelemetry import trace

from boutique.mesh.flags import flags
from boutique.shop.flag_watch import FlagWatch

log = logging.getLogger(__name__)

RECOMMENDATION_CACHE_FAILURE = "recommendationCacheFailure"
MISS_RATE = 0.5
MAX_ENTRIES = 1 << 21  # ~16 MB of references; scanning it takes 100-200 ms


class GrowingCache:
    """The faulty cache of catalog product ids (duplicates and all)."""

    def __init__(self, rng: random.Random | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self.rng = rng or random.Random()
        self.max_entries = max_entries
        self.ids: list[str] = []
        self._capped = False
        self._watch = FlagWatch(
            RECOMMENDATION_CACHE_FAILURE, lambda: flags().boolean(RECOMMENDATION_CACHE_FAILURE), self.clear
        )

    async def product_ids(self, fetch: Callable[[], Awaitable[list[str]]]) -> list[str]:
        """Every id the cache holds; a miss fetches the catalog and doubles the cache (inside the call's span)."""
        self._watch.arm()
        hit = bool(self.ids) and self.rng.random() >= MISS_RATE
        if not hit:
            fetched = await fetch()
            grown = self.ids + self.ids + fetched  # the fault: the cache is appended to itself on every miss
            if len(grown) > self.max_entries:
                grown = grown[: self.max_entries]
                if not self._capped:
                    self._capped = True
                    log.warning(
                        "%s: the cache holds %d ids, the cap; it grows no more",
                        RECOMMENDATION_CACHE_FAILURE,
                        self.max_entries,
                    )
            self.ids = grown
        span = trace.get_current_span()
        span.set_attribute("app.cache_hit", hit)
        span.set_attribute("app.recommendation.cache_size", len(self.ids))
        return self.ids

    def clear(self) -> None:
        """Empty the cache (the flag is off)."""
        if self.ids:
            log.info("%s is off: %d cached ids dropped", RECOMMENDATION_CACHE_FAILURE, len(self.ids))
        self.ids = []
        self._capped = False
