"""Typed client of the recommendation service for other services; hides gRPC behind plain calls."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from boutique.mesh import StaticEndpoints
from boutique.mesh.grpc_client import GrpcDependency
from boutique.shop.productcatalog.client import shipped_product_ids
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.rpc import DEFAULT_TIMEOUT, OptionalShopClient

log = logging.getLogger(__name__)

# The curated "featured products" shown when recommendations are unavailable.
FEATURED = ("1YMWWN1N4O", "L9ECAV7KIM", "0PUK6V6EV0", "OLJCESPC7Z", "6E92ZMYYFZ", "2ZYFJ3GM2N")


def known_featured(catalog_ids: Collection[str], featured: Sequence[str] = FEATURED) -> tuple[str, ...]:
    """The featured ids the catalog has, in order; any other is logged and left out (a page would fail
    looking it up)."""
    unknown = [product_id for product_id in featured if product_id not in catalog_ids]
    if unknown:
        log.warning("featured products missing from the catalog left out", extra={"unknown_ids": unknown})
    return tuple(product_id for product_id in featured if product_id in catalog_ids)


class RecommendationClient(OptionalShopClient):
    """Calls hipstershop.RecommendationService; errors arrive as boutique.shop.errors types.

    When the service fails, the featured products answer instead; they are checked against the catalog
    shipped with the shop when the client is built.
    """

    service = "recommendation"
    address_variable = "RECOMMENDATION_SERVICE_ADDR"
    stub_type = pb_grpc.RecommendationServiceStub
    idempotent = frozenset({"ListRecommendations"})

    def __init__(
        self,
        target: StaticEndpoints | GrpcDependency,
        timeout: float = DEFAULT_TIMEOUT,
        featured: Sequence[str] = FEATURED,
    ) -> None:
        super().__init__(target, timeout)
        self.featured = known_featured(shipped_product_ids(), featured)

    async def list_recommendations(self, user_id: str, product_ids: list[str]) -> list[str]:
        """Ids of up to five products to suggest to `user_id`, none of `product_ids` (featured ones if down)."""
        request = pb.ListRecommendationsRequest(user_id=user_id, product_ids=product_ids)

        def featured(exc: BaseException) -> pb.ListRecommendationsResponse:
            return pb.ListRecommendationsResponse(
                product_ids=[p for p in self.featured if p not in product_ids][:5]
            )

        return list((await self._call("ListRecommendations", request, fallback=featured)).product_ids)
