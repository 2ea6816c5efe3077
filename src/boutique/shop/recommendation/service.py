"""The recommendation service's domain logic: catalog products minus the given ones, sampled at random."""

from __future__ import annotations

import random
from typing import Protocol

from boutique.mesh.flags import flags
from boutique.shop.errors import InvalidArgument
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.recommendation.cache import RECOMMENDATION_CACHE_FAILURE, GrowingCache

MAX_RECOMMENDATIONS = 5
MAX_USER_ID_LENGTH = 128
MAX_PRODUCT_IDS = 50
MAX_PRODUCT_ID_LENGTH = 64


class ProductLister(Protocol):
    """What this service needs from the catalog (CatalogClient satisfies it)."""

    async def list_products(self) -> list[pb.Product]:
        """Every product on sale."""
        ...


def validate_request(user_id: str, product_ids: list[str]) -> None:
    """Raise InvalidArgument for an oversized user id or product id list."""
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise InvalidArgument(f"user_id longer than {MAX_USER_ID_LENGTH} characters")
    if len(product_ids) > MAX_PRODUCT_IDS:
        raise InvalidArgument(f"more than {MAX_PRODUCT_IDS} product_ids ({len(product_ids)})")
    for product_id in product_ids:
        if len(product_id) > MAX_PRODUCT_ID_LENGTH:
            raise InvalidArgument(f"a product id is longer than {MAX_PRODUCT_ID_LENGTH} characters")


class RecommendationService:
    """Recommends up to five products from the catalog that the request does not name."""

    def __init__(
        self, catalog: ProductLister, rng: random.Random | None = None, cache: GrowingCache | None = None
    ) -> None:
        self.catalog = catalog
        self.rng = rng or random.Random()
        self.cache = cache or GrowingCache()

    async def list_recommendations(self, user_id: str, product_ids: list[str]) -> list[str]:
        """Ids of up to five random catalog products not in `product_ids`; Unavailable if the catalog is down."""
        validate_request(user_id, product_ids)
        excluded = set(product_ids)
        if flags().boolean(RECOMMENDATION_CACHE_FAILURE):
            ids = await self.cache.product_ids(self._catalog_ids)
        else:
            self.cache.clear()
            ids = await self._catalog_ids()
        candidates = list(dict.fromkeys(i for i in ids if i not in excluded))  # the whole cache, when on
        return self.rng.sample(candidates, min(MAX_RECOMMENDATIONS, len(candidates)))

    async def _catalog_ids(self) -> list[str]:
        """The id of every product on sale, asked of the catalog."""
        return [p.id for p in await self.catalog.list_products()]
